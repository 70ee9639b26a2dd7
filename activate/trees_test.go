package activate

import (
	"context"
	"slices"
	"testing"

	"github.com/rootswap/rootswap/index"
)

// TestTrees: each tree, oldest first, with the machines whose link points
// at it and its pin; empty lists are [] for JSON.
func TestTrees(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d1, d2, d3 := importTree(t, s, "v1"), importTree(t, s, "v2"), importTree(t, s, "v3")
	if _, _, err := Activate(ctx, s, "a", d2, "img", "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Activate(ctx, s, "b", d1, "img", "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Activate(ctx, s, "c", d2, "img", "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *index.Tx) error { return tx.Pin(d3) }); err != nil {
		t.Fatal(err)
	}
	got, err := Trees(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("Trees: %d, want 3: %+v", len(got), got)
	}
	want := map[string][]string{d1.String(): {"b"}, d2.String(): {"a", "c"}, d3.String(): {}}
	for i, r := range got {
		if i > 0 && r.Created.Before(got[i-1].Created) {
			t.Errorf("tree %d created before tree %d: want oldest first", i, i-1)
		}
		if !slices.Equal(r.Machines, want[r.Digest.String()]) || r.Machines == nil || r.Refs == nil {
			t.Errorf("tree %s: machines %q refs %q, want machines %q and no nil list", r.Digest, r.Machines, r.Refs, want[r.Digest.String()])
		}
		if r.Pinned != (r.Digest == d3) {
			t.Errorf("tree %s: pinned %v", r.Digest, r.Pinned)
		}
	}
}
