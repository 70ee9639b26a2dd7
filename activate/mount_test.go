package activate

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/fsys"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// inChildNamespace reruns the calling test in a child process with a
// private mount namespace of its own, so that what it mounts "on the
// host" stays there; it returns true in the child, where the test runs.
func inChildNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv("ACTIVATE_CHILD_NS") == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces, overlayfs)")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), "ACTIVATE_CHILD_NS="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Errorf("in a mount namespace of its own: %v\n%s", err, out)
	}
	return false
}

// TestMountUmount: rootswap mount shows a stack merged and read-only, a
// lone layer too, and a plain tree read-only; the overlay's source is the
// stack's directory (what gc reads); umount takes each away and nothing
// else. Through both mount APIs.
func TestMountUmount(t *testing.T) {
	if !inChildNamespace(t) {
		return
	}
	bothMountPaths(t, testMountUmount)
}

func testMountUmount(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	mnt := t.TempDir()
	plain := storetest.ImportPlain(t, s, "plain", storetest.File{Name: "plain", Content: "z"})
	two := importStack(t, s, []layerFile{{Name: "a", Content: "1"}, {Name: "gone", Content: "1"}}, []layerFile{{Name: ".wh.gone"}, {Name: "b", Content: "2"}})
	one := importStack(t, s, []layerFile{{Name: "only", Content: "1"}})
	dir2, _ := stackDir(t, s, two)
	dir1, _ := stackDir(t, s, one)
	for _, tc := range []struct {
		name  string
		tree  digest.Digest
		want  string
		stack string
	}{
		{"stack", two, "a b", dir2},
		{"one layer", one, "only", dir1},
		{"plain", plain, "plain", ""},
	} {
		got, err := Mount(ctx, s, tc.tree, mnt)
		if err != nil {
			t.Fatalf("%s: mount: %v", tc.name, err)
		}
		if got != mnt {
			t.Errorf("%s: mounted at %s, want %s", tc.name, got, mnt)
		}
		if names := hostEntries(t, mnt); names != tc.want {
			t.Errorf("%s: the mount shows %q, want %q", tc.name, names, tc.want)
		}
		if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: write into the mount: %v, want EROFS", tc.name, err)
		}
		m, _, _ := fsys.MountAt(mnt)
		if tc.stack != "" && (m.FSType != "overlay" || m.Source != tc.stack) {
			t.Errorf("%s: mounted %s from %s, want an overlay from %s", tc.name, m.FSType, m.Source, tc.stack)
		}
		ud, err := Umount(s, mnt)
		if err != nil || ud != tc.tree {
			t.Errorf("%s: umount: %s, %v, want %s", tc.name, ud, err, tc.tree)
		}
		if names := hostEntries(t, mnt); names != "" {
			t.Errorf("%s: after umount the directory shows %q", tc.name, names)
		}
	}

	// Refused: inside the store, above it, and (umount) what is no tree.
	for _, dir := range []string{s.Root(), filepath.Join(s.Root(), "trees"), filepath.Dir(s.Root())} {
		if _, err := Mount(ctx, s, plain, dir); !errors.Is(err, ErrMountPoint) {
			t.Errorf("mount at %s: %v, want ErrMountPoint", dir, err)
		}
	}
	if _, err := Umount(s, mnt); !errors.Is(err, ErrMountPoint) || !strings.Contains(err.Error(), "nothing is mounted there") {
		t.Errorf("umount of a plain directory: %v", err)
	}
	if err := exec.Command("mount", "-t", "tmpfs", "tmpfs", mnt).Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Unmount(mnt) })
	if _, err := Umount(s, mnt); !errors.Is(err, ErrMountPoint) || !strings.Contains(err.Error(), "tmpfs") {
		t.Errorf("umount of a tmpfs: %v", err)
	}
}
