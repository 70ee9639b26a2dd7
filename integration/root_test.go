package integration

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestNotRootSaysSo: a user other than root on root's store gets
// "rootswap must run as root: …" (exit 1) instead of a bare permission
// error.
func TestNotRootSaysSo(t *testing.T) {
	needIntegration(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to make root's store and to switch to nobody")
	}
	s := newStore(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.Close()
	file := filepath.Join(t.TempDir(), "root.tar")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ok("import", "--tar", file)
	for _, args := range [][]string{{"list"}, {"images"}, {"gc", "--dry-run"}} {
		cmd := exec.Command(rootswapBin(t), append([]string{"--root", s.root}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(stderr.String(), "rootswap must run as root: ") || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%v as nobody: %v\n%s", args, err, stderr.String())
		}
	}
}
