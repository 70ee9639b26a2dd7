package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/rootswap/rootswap/index"
)

// ChainIDs agrees with the image spec's definition (its reference
// implementation), for no layer, one, and several.
func TestChainIDs(t *testing.T) {
	for n := 0; n <= 4; n++ {
		var ids []digest.Digest
		for i := range n {
			ids = append(ids, digest.FromString(string(rune('a'+i))))
		}
		got := ChainIDs(ids)
		want := identity.ChainIDs(append([]digest.Digest(nil), ids...))
		if len(got) != len(want) || (n > 0 && !reflect.DeepEqual(got, want)) {
			t.Errorf("ChainIDs of %d layers: %v, want %v", n, got, want)
		}
	}
}

// StackOf answers from the record: a stack's lowers are its layer links
// topmost first, a plain tree is no stack (whatever its directory holds),
// a missing tree is ErrNotFound, and a record naming no digest is
// refused before its names become paths. The records are written by
// hand, without directories, so the store is not checked at the end.
func TestStackOf(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "store"), Options{LockTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	chains := ChainIDs([]digest.Digest{digest.FromString("a"), digest.FromString("b"), digest.FromString("c")})
	stack, plain, bad := digest.FromString("stack"), digest.FromString("plain"), digest.FromString("bad")
	err = s.Update(func(tx *index.Tx) error {
		for _, t := range []index.Tree{{Digest: stack, Stack: chains}, {Digest: plain}, {Digest: bad, Stack: []digest.Digest{"../x"}}} {
			if err := tx.PutTree(t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, lowers, ok, err := s.StackOf(stack)
	if err != nil || !ok || dir != s.TreePath(stack) || !reflect.DeepEqual(lowers, []string{"layer@2", "layer@1", "layer@0"}) {
		t.Errorf("StackOf(stack) = %q, %q, %v, %v; want %q, [layer@2 layer@1 layer@0], true", dir, lowers, ok, err, s.TreePath(stack))
	}
	dir, lowers, ok, err = s.StackOf(plain)
	if err != nil || ok || dir != s.TreePath(plain) || lowers != nil {
		t.Errorf("StackOf(plain) = %q, %q, %v, %v; want %q, no lowers, false", dir, lowers, ok, err, s.TreePath(plain))
	}
	if _, _, _, err := s.StackOf(digest.FromString("missing")); !errors.Is(err, ErrNotFound) {
		t.Errorf("StackOf(missing): %v, want ErrNotFound", err)
	}
	if _, _, ok, err := s.StackOf(bad); !errors.Is(err, ErrInvalid) || ok {
		t.Errorf("StackOf(bad) = %v, %v; want ErrInvalid", ok, err)
	}
}

// stackLayers stores two layers' files and returns their directories as
// snapshot.LayerDirs would list them: the upper one hides etc/a with a
// whiteout and opt's lower children by making it opaque.
func stackLayers(t *testing.T, s *Store) (ids []digest.Digest, dirs []LayerDir) {
	t.Helper()
	dir := func(name string) item {
		return item{Entry: Entry{Name: name, Kind: KindDir, Mode: 0o755, ModTime: mtime}}
	}
	w0, l0 := putLayer(t, s, digest.FromString("layer 0"), "", []item{dir("etc"), reg("etc/a", "a", 0o644), reg("etc/b", "b", 0o644), dir("opt"), reg("opt/x", "x", 0o644)})
	w0.Abort() // the objects stay
	w1, l1 := putLayer(t, s, digest.FromString("layer 1"), "", []item{dir("etc"), dir("opt"), reg("opt/y", "y", 0o600)})
	w1.Abort()
	return []digest.Digest{l0.DiffID, l1.DiffID}, []LayerDir{
		{Entries: l0.Entries},
		{Entries: l1.Entries, Whiteouts: []string{"etc/a"}, Opaque: []string{"opt"}},
	}
}

// publishStack publishes dirs as the layer directories of ids and the
// stack d of them.
func publishStack(t *testing.T, s *Store, d digest.Digest, ids []digest.Digest, dirs []LayerDir) index.Tree {
	t.Helper()
	ctx := context.Background()
	chains := ChainIDs(ids)
	for i := range ids {
		parent := digest.Digest("")
		if i > 0 {
			parent = chains[i-1]
		}
		if _, err := s.PublishLayerDir(ctx, chains[i], ids[i], parent, dirs[i]); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	tr, err := s.BuildStack(ctx, d, Stack{Layers: ids, Entries: dirs[len(dirs)-1].Entries})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestPublishStack: layer directories are published by chain ID with
// their records (whiteouts as 0:0 character devices, opaque directories
// marked), the stack's directory holds only its layer links, StackOf
// names them topmost first, and a layer directory the index has is not
// built again.
func TestPublishStack(t *testing.T) {
	s := testStore(t)
	ids, dirs := stackLayers(t, s)
	chains := ChainIDs(ids)
	d := digest.FromString("image")
	tr := publishStack(t, s, d, ids, dirs)
	if !reflect.DeepEqual(tr.Stack, chains) || !reflect.DeepEqual(tr.Layers, ids) {
		t.Errorf("record: stack %v layers %v, want %v and %v", tr.Stack, tr.Layers, chains, ids)
	}
	dir, lowers, ok, err := s.StackOf(d)
	if err != nil || !ok || !reflect.DeepEqual(lowers, []string{"layer@1", "layer@0"}) {
		t.Fatalf("StackOf: %q %v %v %v", dir, lowers, ok, err)
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"layer@0", "layer@1"}) {
		t.Errorf("the stack's directory holds %v", got)
	}
	for i, c := range chains {
		p := filepath.Join(dir, StackLink(i))
		if target, err := os.Readlink(p); err != nil || target != "../../../layerdirs/sha256/"+c.Encoded() {
			t.Errorf("%s: %q %v", StackLink(i), target, err)
		}
		if real, err := filepath.EvalSymlinks(p); err != nil || real != s.LayerDirPath(c) {
			t.Errorf("%s resolves to %q %v, want %s", StackLink(i), real, err, s.LayerDirPath(c))
		}
	}
	if st := stat(t, filepath.Join(s.LayerDirPath(chains[1]), "etc/a")); st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout etc/a: mode %o rdev %d, want a 0:0 character device", st.Mode, st.Rdev)
	}
	if x := xattrs(t, filepath.Join(s.LayerDirPath(chains[1]), "opt")); string(x[opaqueXattr]) != "y" {
		t.Errorf("opt's xattrs %q, want %s=y", x, opaqueXattr)
	}
	if a, o := stat(t, filepath.Join(s.LayerDirPath(chains[0]), "etc/a")), stat(t, s.ObjectPath(dirs[0].Entries[1].Object)); a.Ino != o.Ino {
		t.Error("etc/a is not a hard link to its object")
	}
	var recs []index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) { recs, err = tx.LayerDirs(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Parent == recs[1].Parent {
		t.Fatalf("layer directory records: %+v", recs)
	}
	// An upgrade: the same base under another top layer builds one
	// directory; the base's record is not written again.
	before := stat(t, s.LayerDirPath(chains[0]))
	ids2 := []digest.Digest{ids[0], digest.FromString("layer 2")}
	publishStack(t, s, digest.FromString("image v2"), ids2, []LayerDir{dirs[0], {Entries: dirs[1].Entries}})
	if after := stat(t, s.LayerDirPath(chains[0])); after.Ino != before.Ino {
		t.Error("the shared base's directory was built again")
	}
	var again index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) { again, err = tx.LayerDir(chains[0]); return err }); err != nil || !again.Created.Equal(recs[slices.IndexFunc(recs, func(r index.LayerDir) bool { return r.Chain == chains[0] })].Created) {
		t.Errorf("the base's record after the upgrade: %+v %v", again, err)
	}
}

// TestPublishLayerDirLeftover: a directory a crash left without a record
// is replaced, not trusted; a stack of a layer directory the index lacks
// is refused and publishes nothing.
func TestPublishLayerDirLeftover(t *testing.T) {
	s := testStore(t)
	ids, dirs := stackLayers(t, s)
	chains := ChainIDs(ids)
	leftover := s.LayerDirPath(chains[0])
	if err := os.MkdirAll(filepath.Join(leftover, "junk"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PublishLayerDir(context.Background(), chains[0], ids[0], "", dirs[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(leftover, "junk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the leftover's junk is still there: %v", err)
	}
	d := digest.FromString("image")
	_, err := s.BuildStack(context.Background(), d, Stack{Layers: ids, Entries: dirs[1].Entries})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), chains[1].String()) {
		t.Errorf("a stack of an unpublished layer directory: %v, want ErrNotFound naming %s", err, chains[1])
	}
	if _, _, _, err := s.StackOf(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("StackOf after a refused stack: %v, want ErrNotFound", err)
	}
	if _, err := os.Lstat(s.TreePath(d)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused stack's directory: %v", err)
	}
}

// TestPublishLayerDirConcurrent: imports of two images that share a base
// publish the base's directory once, and both stacks name it.
func TestPublishLayerDirConcurrent(t *testing.T) {
	s := testStore(t)
	ids, dirs := stackLayers(t, s)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			top := []digest.Digest{ids[0], digest.FromString(fmt.Sprint("top ", i))}
			publishStack(t, s, digest.FromString(fmt.Sprint("image ", i)), top, dirs)
		}()
	}
	wg.Wait()
	var recs []index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) { recs, err = tx.LayerDirs(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 {
		t.Errorf("%d layer directory records, want 5 (one base, four tops)", len(recs))
	}
}

// TestRepairLayerDir: verify finds a layer directory that no longer
// matches its manifest and the stack that names it; --repair rebuilds the
// directory from its manifest and objects, and the stack is sound again.
// One whose object is gone too cannot be rebuilt: it is removed, record
// first, and its stack marked broken for the next prepare to re-import.
func TestRepairLayerDir(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	ids, dirs := stackLayers(t, s)
	d := digest.FromString("image")
	tr := publishStack(t, s, d, ids, dirs)
	low := s.LayerDirPath(tr.Stack[0])
	if err := os.Remove(filepath.Join(low, "etc/b")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(low, "extra"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Verify(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	var saw []string
	for _, p := range rep.Problems {
		saw = append(saw, p.String())
	}
	all := strings.Join(saw, "\n")
	for _, want := range []string{"layerdir " + tr.Stack[0].String() + " etc/b: missing", "layerdir " + tr.Stack[0].String() + " extra: not in the manifest", "tree " + d.String() + " layer@0"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems:\n%s\nwant one saying %q", all, want)
		}
	}
	if rep, err = s.Verify(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(rep.Repaired, "\n"), "rebuilt layer directory "+tr.Stack[0].String()) {
		t.Errorf("repaired %q, want the layer directory rebuilt", rep.Repaired)
	}
	if rep, err = s.Verify(ctx, nil, false); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("after repair: %v %v", rep.Problems, err)
	}
	if b, err := os.ReadFile(filepath.Join(low, "etc/b")); err != nil || string(b) != "b" {
		t.Errorf("etc/b after repair: %q %v", b, err)
	}

	// An object gone with the file: nothing to rebuild from.
	top := s.LayerDirPath(tr.Stack[1])
	obj := s.ObjectPath(dirs[1].Entries[2].Object) // opt/y
	for _, p := range []string{filepath.Join(top, "opt/y"), obj} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err = s.Verify(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(rep.Repaired, "\n"), "removed damaged layer directory "+tr.Stack[1].String()) {
		t.Errorf("repaired %q, want the layer directory removed", rep.Repaired)
	}
	var got index.Tree
	if err := s.View(func(tx *index.Tx) (err error) { got, err = tx.Tree(d); return err }); err != nil || !got.Broken {
		t.Errorf("the stack after its layer directory went: %+v %v, want broken", got, err)
	}
	if _, err := os.Stat(top); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the damaged layer directory is still there: %v", err)
	}
	// The store check would see the broken stack: the next import of the
	// image publishes the directory again (here from its list, its
	// object stored anew).
	w, _ := putLayer(t, s, ids[1], "", []item{reg("opt/y", "y", 0o600)})
	w.Abort()
	publishStack(t, s, d, ids, dirs)
}
