package activate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// currentGen is the digest of the generation the index calls current.
func currentGen(t *testing.T, s *cache.Store, name string) (uint64, digest.Digest) {
	t.Helper()
	gens, m, err := History(s, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gens {
		if g.Number == m.Current {
			return g.Number, g.Digest
		}
	}
	return m.Current, ""
}

// commitOnly is a crash between the index commit and the rename: the
// index is ahead of the link.
func commitOnly(t *testing.T, s *cache.Store, name string, d digest.Digest) {
	t.Helper()
	err := s.Update(func(tx *index.Tx) error {
		m, err := tx.Machine(name)
		if err != nil {
			return err
		}
		g, err := tx.AppendGeneration(name, index.Generation{Digest: d, Reason: "test"})
		if err != nil {
			return err
		}
		m.Current = g.Number
		return tx.PutMachine(m)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The fast path of prepare is taken only when the index agrees with the
// link; otherwise prepare reconciles them, whichever is ahead.
func TestPrepareReconcilesIndexAndLink(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	for _, c := range []struct {
		name  string
		split func(t *testing.T, s *cache.Store, d1, d2 digest.Digest)
		ref   string // what prepare asks for: the image the link names
	}{
		{"link ahead of the index", func(t *testing.T, s *cache.Store, d1, d2 digest.Digest) {
			if err := flip(s, "m", d2, func() error { return nil }, nil); err != nil {
				t.Fatal(err)
			}
		}, "app:2"},
		{"index ahead of the link", func(t *testing.T, s *cache.Store, d1, d2 digest.Digest) {
			commitOnly(t, s, "m", d2)
		}, "app:1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			src := &fakeSource{images: map[string]string{"app:1": "v1", "app:2": "v2"}}
			if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := Rollback(ctx, s, "m", ""); err != nil {
				t.Fatal(err)
			}
			d1, d2 := digest.FromString("v1"), digest.FromString("v2")
			c.split(t, s, d1, d2)
			p, err := Prepare(ctx, s, src, log, "m", daemonRef(c.ref), PrepareOptions{})
			if err != nil {
				t.Fatal(err)
			}
			link, _ := CurrentTree(s, "m")
			n, idx := currentGen(t, s, "m")
			if idx != link || p.Generation != n || p.Digest != link {
				t.Fatalf("after prepare %s: link %s, index current %d %s, prepare said %d %s", c.ref, link, n, idx, p.Generation, p.Digest)
			}
		})
	}
}

// A flip whose index commit fails changes nothing; one whose rename fails
// takes the index back; neither leaves a staged link.
func TestFlipFailures(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d1, d2 := importTree(t, s, "v1"), importTree(t, s, "v2")
	if _, _, err := Activate(ctx, s, "m", d1, "", "test"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.MachinesDir(), "m")
	noSpc := &os.PathError{Op: "write", Path: "index.db", Err: syscall.ENOSPC}

	err := flip(s, "m", d2, func() error { return noSpc }, func() error { t.Error("undo after a failed record"); return nil })
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("failed record: %v", err)
	}
	if cur, _ := CurrentTree(s, "m"); cur != d1 {
		t.Fatalf("failed record moved the link to %s", cur)
	}

	undone := false
	record := func() error {
		// Something in the way of the rename: a directory at `current`.
		os.Rename(filepath.Join(dir, "current"), filepath.Join(dir, "saved"))
		return os.MkdirAll(filepath.Join(dir, "current", "x"), 0o755)
	}
	err = flip(s, "m", d2, record, func() error { undone = true; return nil })
	if err == nil || !undone || !strings.Contains(err.Error(), "machine m") {
		t.Fatalf("failed rename: %v, undone %v", err, undone)
	}
	os.RemoveAll(filepath.Join(dir, "current"))
	os.Rename(filepath.Join(dir, "saved"), filepath.Join(dir, "current"))
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "current" {
		t.Fatalf("machines/m holds %v, want only current", ents)
	}
}

// A staged link left by a crash goes with the next command on the machine.
func TestLoadRemovesStagedLinks(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d1 := importTree(t, s, "v1")
	if _, _, err := Activate(ctx, s, "m", d1, "", "test"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.MachinesDir(), "m")
	if err := os.Symlink("../../trees/x", filepath.Join(dir, tmpLinkPrefix+"dead")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Activate(ctx, s, "m", d1, "", "test"); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "current" {
		t.Fatalf("machines/m holds %v, want only current", ents)
	}
}

// Out of space is one line: what failed, the store, what still runs.
func TestNoSpaceMessage(t *testing.T) {
	s := newStore(t)
	d1 := importTree(t, s, "v1")
	if _, _, err := Activate(context.Background(), s, "m", d1, "", "test"); err != nil {
		t.Fatal(err)
	}
	cause := fmt.Errorf("machine m: %w", &os.PathError{Op: "symlink", Path: "x", Err: syscall.ENOSPC})
	inner := noSpace(s, "m", "machine m: activate "+string(d1), cause)
	err := noSpace(s, "m", "prepare m img:v2", inner)
	want := fmt.Sprintf("prepare m img:v2: no space left on device (store %s): the machine still runs %s", s.Root(), d1)
	if err.Error() != want || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("got %q, want %q", err, want)
	}
	if other := errors.New("x"); noSpace(s, "m", "y", other) != other {
		t.Fatal("noSpace changed an unrelated error")
	}
}
