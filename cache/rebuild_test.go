package cache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

func TestRebuildFromDisk(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	t1 := build(t, s, digest.FromString("1"), reg("a", "one", 0o644), reg("b", "shared", 0o600))
	t2 := build(t, s, digest.FromString("2"), reg("a", "two", 0o644), reg("b", "shared", 0o600))
	t3 := build(t, s, digest.FromString("3"), reg("a", "three", 0o644))
	machine(t, s, "web", t1.Digest)
	machine(t, s, "web", t2.Digest) // generation 2
	machine(t, s, "api", t1.Digest)
	if err := s.Update(func(tx *index.Tx) error { return tx.Pin(t1.Digest) }); err != nil {
		t.Fatal(err)
	}
	// Tree 3 no longer matches its manifest: it is not recovered.
	if err := os.Remove(filepath.Join(s.TreePath(t3.Digest), "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.indexPath(), 0); err != nil {
		t.Fatal(err)
	}
	defer index.ForgetDamage()

	rep, err := s.Verify(ctx, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	rb := rep.Rebuilt
	if rb == nil || rb.Trees != 2 || rb.Machines != 2 {
		t.Fatalf("rebuilt %+v, want 2 trees and 2 machines", rb)
	}
	if fi, err := os.Stat(filepath.Join(s.root, rb.Damaged)); err != nil || fi.Size() != 0 {
		t.Errorf("the damaged index is not kept as %s: %v", rb.Damaged, err)
	}
	lost := strings.Join(rb.Lost, "\n")
	for _, want := range []string{"tree " + t3.Digest.String() + ": not recovered", "history of 2 machine(s)", "pin", "lease"} {
		if !strings.Contains(lost, want) {
			t.Errorf("lost %q does not say %q", rb.Lost, want)
		}
	}
	err = s.View(func(tx *index.Tx) error {
		for _, want := range []index.Tree{t1, t2} {
			got, err := tx.Tree(want.Digest)
			if err != nil {
				return err
			}
			if got.Files != want.Files || got.Bytes != want.Bytes || got.Manifest != want.Manifest || got.Broken {
				t.Errorf("tree %s rebuilt as %+v, was %+v", want.Digest, got, want)
			}
		}
		if _, err := tx.Tree(t3.Digest); err == nil {
			t.Errorf("tree %s that does not match its manifest was recovered", t3.Digest)
		}
		for name, d := range map[string]digest.Digest{"web": t2.Digest, "api": t1.Digest} {
			m, err := tx.Machine(name)
			if err != nil {
				return err
			}
			gens, err := tx.Generations(name)
			if err != nil {
				return err
			}
			if len(gens) != 1 || m.Current != gens[0].Number || gens[0].Digest != d || gens[0].Reason != "recovered" {
				t.Errorf("machine %s rebuilt as %+v %+v, want one recovered generation of %s", name, m, gens, d)
			}
		}
		if tx.Pinned(t1.Digest) {
			t.Error("a pin was invented")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The rest of the repair ran against the new index: tree 3 went as a
	// leftover, and the store is sound.
	if _, err := os.Stat(s.TreePath(t3.Digest)); !os.IsNotExist(err) {
		t.Errorf("unrecovered tree 3 left in trees/: %v", err)
	}
	if rep, err = s.Verify(ctx, nil, false); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("after the rebuild: %v, %v", rep.Problems, err)
	}
	// An index that is sound is not rebuilt.
	if rep, err = s.Verify(ctx, nil, true); err != nil || rep.Rebuilt != nil {
		t.Fatalf("sound index: rebuilt %+v, %v", rep.Rebuilt, err)
	}
}

// TestMissingIndexIsNotRecreatedEmpty: a store whose index.db is gone but
// whose trees are there must not get a fresh empty index (gc would then
// take every tree for a crash leftover); it is damage that verify --repair
// mends.
func TestMissingIndexIsNotRecreatedEmpty(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	t1 := build(t, s, digest.FromString("1"), reg("a", "one", 0o644))
	machine(t, s, "web", t1.Digest)
	if err := os.Remove(s.indexPath()); err != nil {
		t.Fatal(err)
	}
	defer index.ForgetDamage()
	s2, err := Open(ctx, s.root, Options{})
	if err != nil {
		t.Fatalf("open with index.db missing: %v", err)
	}
	if _, err := os.Stat(s.indexPath()); err == nil {
		t.Fatal("Open made a new, empty index.db beside the trees")
	}
	err = s2.View(func(tx *index.Tx) error { _, err := tx.Trees(); return err })
	if !errors.Is(err, index.ErrDamaged) || !strings.Contains(err.Error(), "index.db") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("reading a missing index: %v, want index.ErrDamaged naming index.db as missing", err)
	}
	rep, err := s2.Verify(ctx, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rebuilt == nil || rep.Rebuilt.Trees != 1 || rep.Rebuilt.Machines != 1 {
		t.Fatalf("rebuilt %+v, want 1 tree and 1 machine", rep.Rebuilt)
	}
}

// TestRebuildKeepsStacks: an index rebuilt from the disk recovers a stack
// (its layer@N links) and the records of its layer directories, each
// matched with the layer manifest on disk that describes it exactly, so
// the stack is sound, verify finds nothing, and the directories are no
// leftovers. A directory that matches no manifest (damaged while the
// index was lost) leaves its stack recovered marked broken, said in
// Lost, which the next import of the image mends.
func TestRebuildKeepsStacks(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	ids, dirs := stackLayers(t, s)
	d := digest.FromString("image")
	tr := publishStack(t, s, d, ids, dirs)
	machine(t, s, "web", d)
	var before []index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) { before, err = tx.LayerDirs(); return err }); err != nil {
		t.Fatal(err)
	}
	lose := func() *VerifyReport {
		t.Helper()
		if err := os.Truncate(s.indexPath(), 0); err != nil {
			t.Fatal(err)
		}
		defer index.ForgetDamage()
		rep, err := s.Verify(ctx, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		if rb := rep.Rebuilt; rb == nil || rb.Trees != 1 || rb.Machines != 1 {
			t.Fatalf("rebuilt %+v, want the stack and its machine", rb)
		}
		for _, l := range rep.Leftovers {
			if strings.HasPrefix(l, "layerdirs/") {
				t.Errorf("leftover %s: a stack links to it", l)
			}
		}
		return rep
	}
	lose()
	var got index.Tree
	var after []index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) {
		if got, err = tx.Tree(d); err != nil {
			return err
		}
		after, err = tx.LayerDirs()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got.Broken || !slices.Equal(got.Stack, tr.Stack) || got.Manifest != tr.Manifest {
		t.Errorf("recovered %+v, want the stack %v, sound", got, tr.Stack)
	}
	if len(after) != len(before) {
		t.Fatalf("recovered layer directory records %+v, want %+v", after, before)
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.Chain != b.Chain || a.Parent != b.Parent || a.Manifest != b.Manifest || a.Files != b.Files || a.Bytes != b.Bytes || (b.Parent == "" && a.DiffID != b.DiffID) {
			t.Errorf("recovered layer directory %+v, want %+v (diffID of a higher one not known)", a, b)
		}
	}
	if rep, err := s.Verify(ctx, nil, false); err != nil || len(rep.Problems) != 0 {
		t.Errorf("verify after the rebuild: %+v %v", rep, err)
	}

	// The top directory damaged (a file its layer never had): it matches
	// no manifest any more.
	if err := os.WriteFile(filepath.Join(s.LayerDirPath(tr.Stack[1]), "opt", "stray"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := lose()
	if !strings.Contains(strings.Join(rep.Rebuilt.Lost, "\n"), "layer directory "+string(tr.Stack[1])+" matches no layer manifest") {
		t.Errorf("lost %q, want the damaged layer directory named", rep.Rebuilt.Lost)
	}
	if err := s.View(func(tx *index.Tx) (err error) { got, err = tx.Tree(d); return err }); err != nil || !got.Broken {
		t.Errorf("recovered %+v %v, want it marked broken", got, err)
	}
	// The next import of the image mends it: its layer directories are
	// published again (the unrecorded ones moved aside) and the stack is
	// rebuilt over the broken one.
	publishStack(t, s, d, ids, dirs)
	if err := s.View(func(tx *index.Tx) (err error) { got, err = tx.Tree(d); return err }); err != nil || got.Broken {
		t.Errorf("after the next import: %+v %v, want it sound", got, err)
	}
}
