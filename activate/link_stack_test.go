package activate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/storetest"
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
	d1 := importStack(t, s, []layerFile{{Name: "one", Content: "1"}})
	d2 := importStack(t, s, []layerFile{{Name: "a", Content: "1"}}, []layerFile{{Name: "two", Content: "2"}})
	d3 := storetest.ImportPlain(t, s, "", storetest.File{Name: "plain", Content: "3"})
	dir1, _ := stackDir(t, s, d1)
	dir2, _ := stackDir(t, s, d2)
	mounts := func() string {
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
	for i, tc := range []struct {
		tree                 digest.Digest
		want, target, mounts string
	}{
		{d1, "one", mnt, "overlay " + dir1},
		{d1, "one", mnt, "overlay " + dir1},
		{d2, "a two", mnt, "overlay " + dir2},
		{d3, "plain", filepath.Join(s.MachinesDir(), name, "current"), ""},
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
		if got := mounts(); got != tc.mounts {
			t.Errorf("step %d: mounted at %s: %q, want %q", i, mnt, got, tc.mounts)
		}
	}
}
