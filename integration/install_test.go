package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall: `make install` puts the binaries (rootswap and the
// signature verifier beside it), a man page per command
// and bash, zsh and fish completion under DESTDIR/PREFIX.
func TestMakeInstall(t *testing.T) {
	needIntegration(t)
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "root")
	cmd := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/usr/local", "BIN="+filepath.Join(tmp, "rootswap"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	bin := filepath.Join(dest, "usr/local/bin/rootswap")
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "rootswap version") {
		t.Errorf("%s --version: %v\n%s", bin, err, out)
	}
	for _, f := range []string{
		"usr/local/bin/rootswap-verify",
		"usr/local/share/man/man1/rootswap.1",
		"usr/local/share/man/man1/rootswap-prepare.1",
		"usr/local/share/man/man1/rootswap-unit.1",
		"usr/local/share/bash-completion/completions/rootswap",
		"usr/local/share/zsh/site-functions/_rootswap",
		"usr/local/share/fish/vendor_completions.d/rootswap.fish",
	} {
		fi, err := os.Stat(filepath.Join(dest, f))
		if err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := exec.LookPath("man"); err == nil {
		out, err := exec.Command("man", "-l", "-P", "cat", filepath.Join(dest, "usr/local/share/man/man1/rootswap-prepare.1")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--pull") {
			t.Errorf("man -l rootswap-prepare.1: %v\n%s", err, out)
		}
	}
}
