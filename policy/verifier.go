package policy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rootswap/rootswap/internal/sigproto"
)

// Sigstore bundles and legacy signatures made keyless or logged in Rekor
// are verified by a second program, rootswap-verify (cmd/rootswap-verify,
// internal/sigverify): sigstore-go and what it pulls in (gRPC,
// go-openapi, Rekor's client) would double rootswap's size and add tens of
// milliseconds of package initialisation to every invocation, the init
// inside each container included, for a check only pulls under such a
// policy need. This file finds the verifier and asks it, through
// internal/sigproto.

// VerifierName is the verifier's file name, beside rootswap's.
const VerifierName = "rootswap-verify"

// VerifierEnv names an environment variable that overrides where the
// verifier is.
const VerifierEnv = "ROOTSWAP_VERIFY"

// verifyTimeout bounds one run of the verifier (a variable for tests): it checks an image's
// signatures offline, tens of milliseconds of CPU.
var verifyTimeout = time.Minute

// ErrNoVerifier is returned when a signature needs rootswap-verify and
// it cannot be found: the installation is incomplete.
var ErrNoVerifier = errors.New(VerifierName + " not found")

// verifierPath is $ROOTSWAP_VERIFY, or rootswap-verify beside the running
// binary; or an error naming what to install.
func verifierPath() (string, error) {
	if p := os.Getenv(VerifierEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: $%s: %w", ErrNoVerifier, VerifierEnv, err)
		}
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoVerifier, err)
	}
	p := filepath.Join(filepath.Dir(exe), VerifierName)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w at %s, which Sigstore signatures need: install it beside rootswap (make install does) or set $%s", ErrNoVerifier, p, VerifierEnv)
	}
	return p, nil
}

// request is what r trusts, for the verifier.
func (r Requirement) request(img Image, sigs []sigproto.Sig) (sigproto.Request, error) {
	req := sigproto.Request{V: sigproto.Version, Manifest: img.Manifest.String(), Identity: r.Identity.Type, Sigs: sigs}
	var err error
	if req.Keys, err = wireKeys(r.Keys); err != nil {
		return req, err
	}
	if req.Rekor, err = wireKeys(r.Rekor); err != nil {
		return req, err
	}
	if f := r.Fulcio; f != nil {
		req.Fulcio = &sigproto.Fulcio{Fingerprint: f.Fingerprint, Issuer: f.Issuer, Subject: f.Subject}
		for _, c := range f.Roots {
			req.Fulcio.Roots = append(req.Fulcio.Roots, c.Raw)
		}
		for _, c := range f.Intermediates {
			req.Fulcio.Intermediates = append(req.Fulcio.Intermediates, c.Raw)
		}
	}
	return req, nil
}

func wireKeys(ks []Key) ([]sigproto.Key, error) {
	var out []sigproto.Key
	for _, k := range ks {
		der, err := x509.MarshalPKIXPublicKey(k.Public)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k.Fingerprint, err)
		}
		out = append(out, sigproto.Key{DER: der, Fingerprint: k.Fingerprint})
	}
	return out, nil
}

// verifySigstore asks the verifier about sigs for img under r: one
// result per signature, in order. An error is the verifier's absence or
// failure, never a judgment of the image.
func (r Requirement) verifySigstore(ctx context.Context, img Image, sigs []sigproto.Sig) ([]sigproto.Result, error) {
	path, err := verifierPath()
	if err != nil {
		return nil, err
	}
	req, err := r.request(img, sigs)
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Stdin = bytes.NewReader(in)
	out := &capped{max: sigproto.MaxVerdict}
	errOut := &capped{max: 4096}
	cmd.Stdout, cmd.Stderr = out, errOut
	cmd.WaitDelay = time.Second
	runErr := cmd.Run()
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: no verdict within %s: %w", path, verifyTimeout, ctx.Err())
	}
	var v sigproto.Verdict
	if err := json.Unmarshal(out.b.Bytes(), &v); err != nil {
		why := firstLine(errOut.b.String())
		if runErr != nil {
			why = runErr.Error() + " " + why
		}
		return nil, fmt.Errorf("%s: no verdict (%s)", path, strings.TrimSpace(why))
	}
	switch {
	case v.V != sigproto.Version:
		return nil, fmt.Errorf("%s speaks protocol v%d, this rootswap v%d: install the %s built with this rootswap", path, v.V, sigproto.Version, VerifierName)
	case v.Error != "":
		return nil, fmt.Errorf("%s: %s", path, firstLine(v.Error))
	case runErr != nil:
		return nil, fmt.Errorf("%s: %w", path, runErr)
	case len(v.Results) != len(sigs):
		return nil, fmt.Errorf("%s: %d results for %d signatures", path, len(v.Results), len(sigs))
	}
	return v.Results, nil
}

// capped keeps the first max bytes written to it and drops the rest: a
// misbehaving verifier cannot fill rootswap's memory.
type capped struct {
	b   bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if n := c.max - c.b.Len(); n > 0 {
		c.b.Write(p[:min(n, len(p))])
	}
	return len(p), nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
