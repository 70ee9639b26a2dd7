package gc

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFindStoreMountTakesTheTopMount: when two file systems are mounted at
// the same point (here /dev/shm on some hosts), the later line is the one
// on top, the one paths resolve to; bind mounts of trees carry its device.
func TestFindStoreMountTakesTheTopMount(t *testing.T) {
	proc := t.TempDir()
	trees := filepath.Join(t.TempDir(), "trees")
	if err := os.MkdirAll(trees, 0o755); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(trees)
	if err != nil {
		t.Fatal(err)
	}
	point := filepath.Dir(filepath.Dir(real)) // two levels up: a mount point of the test's own
	mountinfo := "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n" +
		"25 1 0:23 / " + point + " rw - tmpfs tmpfs rw\n" +
		"30 25 0:27 / " + point + " rw - tmpfs tmpfs rw\n"
	if err := os.MkdirAll(filepath.Join(proc, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "self", "mountinfo"), []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	sm, err := findStoreMount(proc, trees)
	if err != nil {
		t.Fatal(err)
	}
	if sm.dev != "0:27" {
		t.Errorf("trees/ found on device %s, want 0:27, the mount on top", sm.dev)
	}
}
