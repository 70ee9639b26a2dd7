package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/sigstoretest"
	"github.com/rootswap/rootswap/internal/sigverify"
)

// serveEnv makes this test binary the verifier (TestMain): the policy's
// tests check Sigstore signatures as rootswap does, by running a verifier
// program through $ROOTSWAP_VERIFY, with the real verification code.
const serveEnv = "ROOTSWAP_POLICY_TEST_VERIFIER"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "1" {
		if err := sigverify.Serve(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "verifier:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv(serveEnv, "1")
	os.Setenv(VerifierEnv, exe)
	os.Exit(m.Run())
}

// TestVerifierMissing: a signature that needs the verifier, with none
// beside the binary or at $ROOTSWAP_VERIFY, is an error naming what to
// install, not a rejection of the image; a legacy signature by key needs
// no verifier.
func TestVerifierMissing(t *testing.T) {
	f := newBundleFixture(t)
	sig := bundleSig(f.key.Sign(t, f.m, sigstoretest.Options{}))
	for _, env := range []string{"", filepath.Join(t.TempDir(), "absent")} {
		t.Run(fmt.Sprintf("ROOTSWAP_VERIFY=%q", env), func(t *testing.T) {
			t.Setenv(VerifierEnv, env)
			_, err := f.check("r.example/app:1", sig)
			var rj *Rejection
			if !errors.Is(err, ErrNoVerifier) || errors.As(err, &rj) {
				t.Fatalf("Check: %v, want ErrNoVerifier, not a rejection", err)
			}
			if !strings.Contains(err.Error(), "image docker://r.example/app:1") || !strings.Contains(err.Error(), VerifierName) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: not one line naming the image and %s", err, VerifierName)
			}
			if env == "" && !strings.Contains(err.Error(), "make install") {
				t.Errorf("error %q: does not say how to install it", err)
			}
			pl := simpleSigning("r.example/app:1", f.m)
			if a, err := f.check("r.example/app:1", legacySig(pl, f.key.SignLegacy(t, pl, sigstoretest.Options{}))); err != nil {
				t.Errorf("legacy signature by key without a verifier: %+v, %v", a, err)
			}
		})
	}
}

// TestVerifierMisbehaves: a verifier of another protocol version, one
// that answers garbage, fails, or never answers, is an error naming it,
// within a bound.
func TestVerifierMisbehaves(t *testing.T) {
	f := newBundleFixture(t)
	sig := bundleSig(f.key.Sign(t, f.m, sigstoretest.Options{}))
	old := verifyTimeout
	verifyTimeout = 500 * time.Millisecond
	t.Cleanup(func() { verifyTimeout = old })
	for _, tc := range []struct{ name, script, err string }{
		{"another version", `cat >/dev/null; echo '{"v":2,"results":[{"how":"key x"}]}'`, "speaks protocol v2"},
		{"garbage", `cat >/dev/null; echo 'not json'; echo 'oops' >&2; exit 3`, "no verdict (exit status 3 oops)"},
		{"an error", `cat >/dev/null; echo '{"v":1,"error":"bad request"}'; exit 1`, ": bad request"},
		{"too few results", `cat >/dev/null; echo '{"v":1,"results":[]}'`, "0 results for 1 signatures"},
		{"hangs", `exec sleep 600`, "no verdict within 500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "verify")
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv(VerifierEnv, p)
			start := time.Now()
			_, err := f.check("r.example/app:1", sig)
			var rj *Rejection
			if err == nil || errors.As(err, &rj) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), p) {
				t.Fatalf("Check: %v, want an error naming %s with %q", err, p, tc.err)
			}
			if d := time.Since(start); d > verifyTimeout+10*time.Second {
				t.Errorf("Check took %s, bound %s", d, verifyTimeout)
			}
		})
	}
}

// TestVerifierContext: a cancelled context stops the verifier's run.
func TestVerifierContext(t *testing.T) {
	f := newBundleFixture(t)
	p := filepath.Join(t.TempDir(), "verify")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(VerifierEnv, p)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.p.Check(ctx, Image{Transport: "docker", Name: "r.example/app:1", Ref: "docker://r.example/app:1", Manifest: f.m},
		func(context.Context) ([]Signature, error) {
			return []Signature{bundleSig(f.key.Sign(t, f.m, sigstoretest.Options{}))}, nil
		})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled context: %v", err)
	}
}
