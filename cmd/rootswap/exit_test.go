package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestUnknownCommandExits2: a mistyped command is a usage error like a
// mistyped flag, with cobra's suggestion kept.
func TestUnknownCommandExits2(t *testing.T) {
	code, out := execute(t, "lsit")
	if code != 2 || !strings.Contains(out, `unknown command "lsit"`) || !strings.Contains(out, "did you mean list") {
		t.Errorf("rootswap lsit: exit %d\n%s", code, out)
	}
	if code, out := execute(t); code != 0 || !strings.Contains(out, "Usage:") {
		t.Errorf("rootswap alone: exit %d\n%s", code, out)
	}
}

// TestEnvVarsValidatedLikeFlags: a malformed variable is a usage error in
// one line naming it, never a silent fall-back to the default; a flag
// given on the command line wins over its variable.
func TestEnvVarsValidatedLikeFlags(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"ROOTSWAP_REGISTRY_TIMEOUT=2", []string{"list"}, `ROOTSWAP_REGISTRY_TIMEOUT=2: time: missing unit in duration "2"`},
		{"ROOTSWAP_REGISTRY_TIMEOUT=bogus", []string{"list"}, `ROOTSWAP_REGISTRY_TIMEOUT=bogus: time: invalid duration "bogus"`},
		{"ROOTSWAP_REGISTRY_TIMEOUT=0s", []string{"list"}, `ROOTSWAP_REGISTRY_TIMEOUT=0s: must be positive`},
		{"ROOTSWAP_SOURCE=hub", []string{"list"}, `ROOTSWAP_SOURCE="hub": want daemon or registry`},
		{"ROOTSWAP_HEALTHY_AFTER=soon", []string{"history", "web"}, `ROOTSWAP_HEALTHY_AFTER=soon: time: invalid duration "soon"`},
		{"ROOTSWAP_HEALTHY_AFTER=soon", []string{"prepare", "web", "img:1"}, `ROOTSWAP_HEALTHY_AFTER=soon`},
		{"ROOTSWAP_REGISTRY_TIMEOUT=2", []string{"run", "web"}, `ROOTSWAP_REGISTRY_TIMEOUT=2`},
		{"ROOTSWAP_STOP_TIMEOUT=soon", []string{"run", "web"}, `ROOTSWAP_STOP_TIMEOUT=soon: want a duration`},
		{"ROOTSWAP_LINK_MACHINES=maybe", []string{"prepare", "web", "img:1"}, `ROOTSWAP_LINK_MACHINES=maybe: want 1, 0 or an absolute directory`},
		{"ROOTSWAP_LINK_MACHINES=machines", []string{"activate", "web", "sha256:" + strings.Repeat("a", 64)}, `ROOTSWAP_LINK_MACHINES=machines`},
	} {
		code, stdout, stderr := asMain(t, []string{tc.env, "ROOTSWAP_ROOT=" + root}, tc.args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s rootswap %q: exit %d, stdout %q\nstderr %q, want one line with %q", tc.env, tc.args, code, stdout, stderr, tc.want)
		}
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("a refused variable left a store: %v", err)
	}
	// The flag wins over its variable, malformed or not.
	if code, _, stderr := asMain(t, []string{"ROOTSWAP_REGISTRY_TIMEOUT=2", "ROOTSWAP_ROOT=" + root}, "--registry-timeout", "3s", "list"); code != 1 || !strings.Contains(stderr, "no store at "+root) {
		t.Errorf("--registry-timeout 3s over ROOTSWAP_REGISTRY_TIMEOUT=2: exit %d\n%s", code, stderr)
	}
	// ROOTSWAP_ROOT names the store.
	other := filepath.Join(t.TempDir(), "other")
	if code, _, stderr := asMain(t, []string{"ROOTSWAP_ROOT=" + other}, "list"); code != 1 || !strings.Contains(stderr, "no store at "+other) {
		t.Errorf("ROOTSWAP_ROOT=%s list: exit %d\n%s", other, code, stderr)
	}
}

// TestGCWithoutTheLockPrintsNoResult: a gc that cannot take the store
// lock says so and prints no "removed 0 tree(s)" result.
func TestGCWithoutTheLockPrintsNoResult(t *testing.T) {
	root, _ := storeWithMachine(t)
	s := storetest.Open(t, root)
	l, err := s.Lock(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	for _, args := range [][]string{{"gc"}, {"gc", "--json"}} {
		code, stdout, stderr := asMain(t, nil, append([]string{"--root", root, "--lock-timeout", "0"}, args...)...)
		if code != 75 || stdout != "" || !strings.Contains(stderr, "busy") {
			t.Errorf("%q on a busy store: exit %d\nstdout %q\nstderr %q", args, code, stdout, stderr)
		}
	}
}

// TestPermissionDeniedSaysRoot: EACCES or EPERM for a user other than
// root is "rootswap must run as root", with the cause; for root it is the
// plain error.
func TestPermissionDeniedSaysRoot(t *testing.T) {
	var buf bytes.Buffer
	stderr = &buf
	defer func() { stderr, geteuid = os.Stderr, os.Geteuid }()
	err := fmt.Errorf("open /var/lib/rootswap/lock: %w", fs.ErrPermission)
	geteuid = func() int { return 1000 }
	if code := exitCode(err); code != 1 || !strings.HasPrefix(buf.String(), "rootswap must run as root: open /var/lib/rootswap/lock: permission denied") {
		t.Errorf("uid 1000: exit %d, %q", code, buf.String())
	}
	buf.Reset()
	geteuid = func() int { return 0 }
	if code := exitCode(err); code != 1 || strings.Contains(buf.String(), "must run as root") {
		t.Errorf("uid 0: exit %d, %q", code, buf.String())
	}
}

// TestCtrlCIsInterrupted: SIGINT during a registry request ends the
// command with "interrupted" and status 130, SIGTERM with "terminated"
// and 143, not with whatever the cut-short request returned.
func TestCtrlCIsInterrupted(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			asked := make(chan struct{}, 16)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked <- struct{}{}
				<-r.Context().Done() // never answers
			}))
			defer srv.Close()
			root := filepath.Join(t.TempDir(), "store")
			image := "docker://" + strings.TrimPrefix(srv.URL, "http://") + "/app:1"
			cmd := exec.Command(os.Args[0], "--root", root, "--registry-timeout", "5m", "import", image)
			cmd.Env = append(os.Environ(), "ROOTSWAP_TEST_AS_MAIN=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-asked:
			case <-time.After(time.Minute):
				cmd.Process.Kill()
				t.Fatal("import never asked the registry")
			}
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(time.Minute):
				cmd.Process.Kill()
				t.Fatal("import still runs a minute after the signal")
			}
			want, msg := 130, "rootswap: interrupted\n"
			if sig == syscall.SIGTERM {
				want, msg = 143, "rootswap: terminated\n"
			}
			if code := cmd.ProcessState.ExitCode(); code != want || stderr.String() != msg || stdout.Len() != 0 {
				t.Errorf("import after %s: exit %d, want %d\nstdout %q\nstderr %q", sig, code, want, stdout.String(), stderr.String())
			}
		})
	}
}

// TestLinkMachinesVariable: ROOTSWAP_LINK_MACHINES is a boolean or an
// absolute directory; "false" and "no" turn linking off (they used to
// turn it on, as any value but "0" did).
func TestLinkMachinesVariable(t *testing.T) {
	for v, want := range map[string]struct {
		on  bool
		dir string
		ok  bool
	}{
		"": {false, "", true}, "0": {false, "", true}, "false": {false, "", true}, "No": {false, "", true},
		"1": {true, "", true}, "true": {true, "", true}, "/srv/machines": {true, "/srv/machines", true},
		"machines": {true, "machines", false}, "maybe": {true, "maybe", false},
	} {
		on, dir, ok := linkEnv(v)
		if on != want.on || dir != want.dir || ok != want.ok {
			t.Errorf("linkEnv(%q) = %v, %q, %v; want %v", v, on, dir, ok, want)
		}
	}
}
