package snapshot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/fsys"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestLayerDirsStackAsMerged: for every case of the merge table, the
// stack an import publishes (layer directories by chain ID, mounted by
// overlayfs as StackOf says) shows exactly the tree BuildFromList makes
// of Merge's list: names, kinds, modes, owners, mtimes, contents, link
// targets, device numbers and kept xattrs. The whiteouts, opaque
// directories and type changes of the table are what a stack must get
// right.
func TestLayerDirsStackAsMerged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlayfs, chown)")
	}
	for _, c := range mergeCases() {
		t.Run(c.name, func(t *testing.T) {
			if len(c.layers) == 0 {
				return // nothing to stack
			}
			ctx := context.Background()
			// Not t.TempDir(): a test's name may hold a comma, which an
			// overlay's options cannot carry.
			base, err := os.MkdirTemp("", "layerdirs-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			s := openStore(t, filepath.Join(base, "store"))
			var ds []snapshot.Diff
			for i, l := range c.layers {
				w, err := s.NewLayerWriter(ctx)
				if err != nil {
					t.Fatal(err)
				}
				d, err := snapshot.ReadDiff(ctx, bytes.NewReader(l), w.Put)
				w.Abort() // the objects stay
				if err != nil {
					t.Fatalf("layer %d: %v", i+1, err)
				}
				ds = append(ds, d)
			}
			merged, err := snapshot.Merge(ds)
			if err != nil {
				t.Fatal(err)
			}
			tree := digestOf(c.name)
			if _, err := s.BuildFromList(ctx, tree, cache.List{Entries: merged}); err != nil {
				t.Fatal(err)
			}
			img := snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/merge:1"}, Digest: digestOf(c.name + " stack"), Content: &layeredSource{layers: c.layers}}
			st, _, err := snapshot.ImportImage(ctx, s, img, snapshot.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Stack) != len(c.layers) {
				t.Fatalf("the import's stack: %v, want %d layers", st.Stack, len(c.layers))
			}
			want, err := walk(s.TreePath(tree))
			if err != nil {
				t.Fatal(err)
			}
			got, err := walk(storetest.Tree(t, s, st.Digest))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("the stack shows:\n%s\nthe merged tree:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func digestOf(s string) digest.Digest { return digest.FromString(s) }

// walk lists everything under root but root's own mtime (a tree without
// a root entry gets the time of its build): name, type and mode, owner,
// mtime, then content hash, link target or device numbers, then kept
// xattrs.
func walk(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		l := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		if rel != "." {
			l += fmt.Sprintf(" %d", st.Mtim.Nano())
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			l += fmt.Sprintf(" %x", sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			l += " -> " + target
		case fi.Mode()&fs.ModeDevice != 0:
			l += fmt.Sprintf(" %d", st.Rdev)
		}
		if fi.Mode().IsRegular() || fi.IsDir() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			x, err := fsys.Xattrs(f)
			f.Close()
			if err != nil {
				return err
			}
			var ks []string
			for k, v := range x {
				if cache.IdentityXattr(k) {
					ks = append(ks, fmt.Sprintf("%s=%x", k, v))
				}
			}
			sort.Strings(ks)
			l += " " + strings.Join(ks, ",")
		}
		out = append(out, l)
		return nil
	})
	return out, err
}

// TestLayerDirsRefuse: LayerDirs refuses every layer set of the hostile
// table, as Merge does, with a line that names the entry.
func TestLayerDirsRefuse(t *testing.T) {
	for _, c := range hostileLayers() {
		t.Run(c.name, func(t *testing.T) {
			ds, err := readDiffs(objects{}, c.layers)
			if err == nil {
				_, err = snapshot.LayerDirs(ds)
			}
			if err == nil || !strings.Contains(err.Error(), c.refuse) {
				t.Errorf("LAYER ATTACK: %v, want a refusal naming %s", err, c.refuse)
			}
		})
	}
}
