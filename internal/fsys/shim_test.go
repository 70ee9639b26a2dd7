package fsys

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMountShimmed runs in a child process in a mount namespace of its
// own (unshare), as run does: the tree gains the empty directories, keeps
// its files, is read-only, and the host sees none of it.
func TestMountShimmed(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for mounts")
	}
	if os.Getenv("FSYS_SHIM_CHILD") == "" {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("no unshare")
		}
		tree := t.TempDir()
		os.WriteFile(filepath.Join(tree, "app"), []byte("static binary"), 0o755)
		dir := filepath.Join(t.TempDir(), "shim")
		cmd := exec.Command("unshare", "-m", "--propagation", "slave", os.Args[0], "-test.run", "^TestMountShimmed$", "-test.v")
		cmd.Env = append(os.Environ(), "FSYS_SHIM_CHILD=1", "FSYS_SHIM_TREE="+tree, "FSYS_SHIM_DIR="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("the host sees %d entries in %s, want the empty mount point", len(ents), dir)
		}
		if _, err := os.Stat(filepath.Join(tree, "usr")); err == nil {
			t.Errorf("the tree itself gained /usr")
		}
		return
	}
	lockThread()
	root, err := MountShimmed(os.Getenv("FSYS_SHIM_DIR"), os.Getenv("FSYS_SHIM_TREE"), []string{"usr", "proc", "dev"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"usr", "proc", "dev"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("/%s: %v", d, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "app")); err != nil || string(b) != "static binary" {
		t.Errorf("/app: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(root, "new"), nil, 0o644); err == nil {
		t.Errorf("the shimmed tree is writable")
	}
}
