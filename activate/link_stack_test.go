package activate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestLinkMachineStack: --link-machines of a machine whose current tree is
// a stack mounts the stack read-only at MachineMounts/NAME and points the
// link there (nspawn -M cannot read a stack); linking again keeps the one
// mount, a flip to another stack replaces it, a flip to a plain tree takes
// it away and links `current` as before.
func TestLinkMachineStack(t *testing.T) {
	if !inChildNamespace(t) {
		return
	}
	ctx := context.Background()
	s := newStore(t)
	name := fmt.Sprintf("linktest%d", os.Getpid())
	mnt := filepath.Join(MachineMounts, name)
	t.Cleanup(func() { os.Remove(mnt) })
	dir := filepath.Join(t.TempDir(), "machines")
	d1 := importStack(t, s, []layerFile{{Name: "one", Content: "1"}, {Name: "usr", Dir: true}})
	d2 := importStack(t, s, []layerFile{{Name: "a", Content: "1"}, {Name: "usr", Dir: true}}, []layerFile{{Name: "two", Content: "2"}})
	d3 := storetest.ImportPlain(t, s, "", storetest.File{Name: "plain", Content: "3"}, storetest.File{Name: "usr/x"})
	dir1, _ := stackDir(t, s, d1)
	dir2, _ := stackDir(t, s, d2)
	for i, tc := range []struct {
		tree                 digest.Digest
		want, target, mounts string
	}{
		{d1, "one usr", mnt, "overlay " + dir1},
		{d1, "one usr", mnt, "overlay " + dir1},
		{d2, "a two usr", mnt, "overlay " + dir2},
		{d3, "plain usr", filepath.Join(s.MachinesDir(), name, "current"), ""},
	} {
		if _, _, err := Activate(ctx, s, name, tc.tree, "", "test"); err != nil {
			t.Fatal(err)
		}
		if err := LinkMachine(s, name, dir); err != nil {
			t.Fatalf("step %d: link: %v", i, err)
		}
		if got, _ := os.Readlink(filepath.Join(dir, name)); got != tc.target {
			t.Errorf("step %d: the link points at %s, want %s", i, got, tc.target)
		}
		if got := hostEntries(t, filepath.Join(dir, name)); got != tc.want {
			t.Errorf("step %d: the link shows %q, want %q", i, got, tc.want)
		}
		if got := mountsAt(mnt); got != tc.mounts {
			t.Errorf("step %d: mounted at %s: %q, want %q", i, mnt, got, tc.mounts)
		}
	}
}

// mountsAt lists the mounts at mnt in this thread's mount table, each as
// "FSTYPE SOURCE", topmost last.
func mountsAt(mnt string) string {
	b, _ := os.ReadFile("/proc/thread-self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mnt {
			_, post, _ := strings.Cut(l, " - ")
			out = append(out, strings.Join(strings.Fields(post)[:2], " "))
		}
	}
	return strings.Join(out, "; ")
}

// TestLinkMachineScratch: a current tree without /usr (FROM scratch),
// plain or a stack, is mounted read-only at MachineMounts/NAME with the
// shim run lays over it (empty /usr and the API mount points the tree
// lacks), since nspawn refuses a tree without /usr; the link points
// there. Linking again keeps the one mount, the shim's own tmpfs is
// gone from the mount table and its directory removed, and a flip to a
// tree with /usr links `current` again with nothing mounted.
func TestLinkMachineScratch(t *testing.T) {
	if !inChildNamespace(t) {
		return
	}
	ctx := context.Background()
	s := newStore(t)
	name := fmt.Sprintf("scratchlink%d", os.Getpid())
	mnt := filepath.Join(MachineMounts, name)
	t.Cleanup(func() { os.Remove(mnt) })
	dir := filepath.Join(t.TempDir(), "machines")
	plain := storetest.ImportPlain(t, s, "", storetest.File{Name: "app", Content: "1"}, storetest.File{Name: "proc/x"})
	plainDir, err := filepath.EvalSymlinks(s.TreePath(plain))
	if err != nil {
		t.Fatal(err)
	}
	stacked := importStack(t, s, []layerFile{{Name: "app", Content: "2"}}, []layerFile{{Name: "etc", Dir: true}})
	sdir, _ := stackDir(t, s, stacked)
	withUsr := storetest.ImportPlain(t, s, "", storetest.File{Name: "usr/bin/x"})
	for i, tc := range []struct {
		tree                 digest.Digest
		want, target, mounts string
	}{
		{plain, "app dev proc run sys tmp usr", mnt, "overlay " + plainDir},
		{plain, "app dev proc run sys tmp usr", mnt, "overlay " + plainDir},
		{stacked, "app dev etc proc run sys tmp usr", mnt, "overlay " + sdir},
		{withUsr, "usr", filepath.Join(s.MachinesDir(), name, "current"), ""},
	} {
		if _, _, err := Activate(ctx, s, name, tc.tree, "", "test"); err != nil {
			t.Fatal(err)
		}
		if err := LinkMachine(s, name, dir); err != nil {
			t.Fatalf("step %d: link: %v", i, err)
		}
		if got, _ := os.Readlink(filepath.Join(dir, name)); got != tc.target {
			t.Errorf("step %d: the link points at %s, want %s", i, got, tc.target)
		}
		if got := hostEntries(t, filepath.Join(dir, name)); got != tc.want {
			t.Errorf("step %d: the link shows %q, want %q", i, got, tc.want)
		}
		if got := mountsAt(mnt); got != tc.mounts {
			t.Errorf("step %d: mounted at %s: %q, want %q", i, mnt, got, tc.mounts)
		}
		if tc.mounts != "" {
			if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); err == nil {
				t.Errorf("step %d: %s is writable", i, mnt)
			}
		}
		b, _ := os.ReadFile("/proc/thread-self/mountinfo")
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 4 && strings.Contains(f[4], "/.shim-") {
				t.Errorf("step %d: a shim's tmpfs is left mounted: %s", i, l)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(MachineMounts), ".shim-*")); len(left) > 0 {
			t.Errorf("step %d: shim directories left: %q", i, left)
		}
	}
	// The tree stays as the image made it.
	if got := hostEntries(t, plainDir); got != "app proc" {
		t.Errorf("the plain tree holds %q after its mounts", got)
	}
}
