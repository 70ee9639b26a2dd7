package gc

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// stackTree commits each layer (diffID: the digest of its name) and
// publishes its layer directory and stack d of them, as a layered
// import does; it returns the stack's chain IDs and each file's object.
func stackTree(t testing.TB, s *cache.Store, d digest.Digest, layers ...string) ([]digest.Digest, map[string]digest.Digest) {
	t.Helper()
	ctx := context.Background()
	var ids []digest.Digest
	var dirs []cache.LayerDir
	objs := map[string]digest.Digest{}
	for _, name := range layers {
		id := digest.FromString(name)
		es, o := commitLayer(t, s, id, file{name, "content of " + name}, file{"shared", "in every layer"})
		for k, v := range o {
			objs[k] = v
		}
		ids = append(ids, id)
		dirs = append(dirs, cache.LayerDir{Entries: es})
	}
	chains := cache.ChainIDs(ids)
	for i := range ids {
		parent := digest.Digest("")
		if i > 0 {
			parent = chains[i-1]
		}
		if _, err := s.PublishLayerDir(ctx, chains[i], ids[i], parent, dirs[i]); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if _, err := s.BuildStack(ctx, d, cache.Stack{Layers: ids, Entries: dirs[len(dirs)-1].Entries, Refs: []string{"stacked"}}); err != nil {
		t.Fatal(err)
	}
	return chains, objs
}

func layerDirRecorded(t testing.TB, s *cache.Store, chain digest.Digest) bool {
	t.Helper()
	var recs []index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) { recs, err = tx.LayerDirs(); return err }); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Chain == chain {
			return true
		}
	}
	return false
}

// TestStacksGoWithTheirTrees: after an upgrade v1 → v2 (a shared base, a
// new top layer), gc of v1 removes its stack and the layer directory no
// kept stack names, with the objects only it linked, and keeps the base
// both stacked; a layer directory a crash left without a record goes
// too. The dry run plans the same, and a second run finds nothing.
func TestStacksGoWithTheirTrees(t *testing.T) {
	s := storetest.New(t)
	v1, v2 := digest.FromString("v1"), digest.FromString("v2")
	c1, objs1 := stackTree(t, s, v1, "base", "top1")
	c2, _ := stackTree(t, s, v2, "base", "top2")
	if c1[0] != c2[0] {
		t.Fatalf("the base's chain IDs differ: %s %s", c1[0], c2[0])
	}
	activateTree(t, s, "m", v1)
	activateTree(t, s, "m", v2)
	leftover := filepath.Join(s.Root(), "layerdirs", "sha256", digest.FromString("crash").Encoded())
	if err := os.MkdirAll(leftover, 0o755); err != nil {
		t.Fatal(err)
	}

	dry := collect(t, s, Options{Keep: 1, DryRun: true})
	rep := collect(t, s, Options{Keep: 1})
	if !reflect.DeepEqual(dry.LayerDirs, rep.LayerDirs) || !reflect.DeepEqual(dry.Trees, rep.Trees) {
		t.Errorf("the dry run planned %+v and %+v, the run removed %+v and %+v", dry.Trees, dry.LayerDirs, rep.Trees, rep.LayerDirs)
	}
	var gone []digest.Digest
	for _, l := range rep.LayerDirs {
		gone = append(gone, l.Chain)
		if l.Reason == "" {
			t.Errorf("removed layer directory %+v: want why", l)
		}
	}
	if want := sorted(c1[1], digest.FromString("crash")); !reflect.DeepEqual(sorted(gone...), want) {
		t.Errorf("layer directories removed: %v, want v1's top and the leftover %v", gone, want)
	}
	if len(rep.Trees) != 1 || rep.Trees[0].Digest != v1 || exists(s.TreePath(v1)) || indexed(t, s, v1) {
		t.Errorf("v1's stack: removed %+v, on disk %v, indexed %v", rep.Trees, exists(s.TreePath(v1)), indexed(t, s, v1))
	}
	if exists(s.LayerDirPath(c1[1])) || layerDirRecorded(t, s, c1[1]) || exists(leftover) {
		t.Error("v1's top layer directory or the leftover is still there")
	}
	for _, c := range c2 {
		if !exists(s.LayerDirPath(c)) || !layerDirRecorded(t, s, c) {
			t.Errorf("layer directory %s of the kept stack was removed", c)
		}
	}
	if exists(s.ObjectPath(objs1["top1"])) {
		t.Error("the object only v1's top layer held is still there")
	}
	if !exists(s.ObjectPath(objs1["base"])) || !exists(s.ObjectPath(objs1["shared"])) {
		t.Error("an object the kept stack links went with v1")
	}
	if again := collect(t, s, Options{Keep: 1}); len(again.LayerDirs) != 0 || len(again.Trees) != 0 || again.Objects != 0 {
		t.Errorf("second gc: %+v, want nothing removed", again)
	}
}

// TestPlainTreesBesideStacks: a store written before stacks (a plain
// tree, the machine's first generation) upgraded to a stack and back:
// gc keeps whichever the machine's kept generations name, removes the
// plain tree when no generation needs it any more, as before stacks,
// and never touches the stack's layer directories for it; the store
// stays sound throughout.
func TestPlainTreesBesideStacks(t *testing.T) {
	s := storetest.New(t)
	plain := storetest.ImportPlain(t, s, "old:1", storetest.File{Name: "etc/version", Content: "old"}, storetest.File{Name: "usr/own", Content: "only the old tree"})
	stacked := digest.FromString("new")
	chains, _ := stackTree(t, s, stacked, "base", "top")
	activateTree(t, s, "m", plain)
	activateTree(t, s, "m", stacked)

	// Both generations kept: nothing goes.
	if rep := collect(t, s, Options{Keep: 2}); len(rep.Trees) != 0 || len(rep.LayerDirs) != 0 {
		t.Fatalf("gc --keep 2 removed %+v and %+v, want nothing", rep.Trees, rep.LayerDirs)
	}
	// Back on the plain tree (a rollback): the plain tree is current, the
	// stack a kept generation.
	activateTree(t, s, "m", plain)
	if rep := collect(t, s, Options{Keep: 2}); len(rep.Trees) != 0 || len(rep.LayerDirs) != 0 {
		t.Fatalf("after the rollback gc --keep 2 removed %+v and %+v, want nothing", rep.Trees, rep.LayerDirs)
	}
	if !exists(filepath.Join(s.TreePath(plain), "usr", "own")) {
		t.Fatal("the plain tree lost a file")
	}
	// On the stack again, keeping one generation: the plain tree goes,
	// the stack and every layer directory it names stay.
	activateTree(t, s, "m", stacked)
	rep := collect(t, s, Options{Keep: 1})
	if len(rep.Trees) != 1 || rep.Trees[0].Digest != plain || exists(s.TreePath(plain)) || indexed(t, s, plain) {
		t.Errorf("gc --keep 1 removed %+v; plain tree on disk %v, indexed %v", rep.Trees, exists(s.TreePath(plain)), indexed(t, s, plain))
	}
	if len(rep.LayerDirs) != 0 {
		t.Errorf("gc of a plain tree removed layer directories %+v", rep.LayerDirs)
	}
	for _, c := range chains {
		if !exists(s.LayerDirPath(c)) || !layerDirRecorded(t, s, c) {
			t.Errorf("layer directory %s of the current stack was removed", c)
		}
	}
	if !exists(s.TreePath(stacked)) || !indexed(t, s, stacked) {
		t.Error("the current stack was removed")
	}
}
