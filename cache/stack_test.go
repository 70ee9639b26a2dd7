package cache

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
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
