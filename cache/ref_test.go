package cache_test

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestRefRecords: the ref cache behind the store answers "no record"
// without an error, gives back what was recorded last, and refuses to
// record or return digests that do not parse.
func TestRefRecords(t *testing.T) {
	s := storetest.New(t)
	const ref = "docker://reg.example/app:v1"
	if d, m, ok, err := s.LookupRef(ref); ok || err != nil || d != "" || m != "" {
		t.Fatalf("LookupRef of a new store = %s, %s, %v, %v; want no record", d, m, ok, err)
	}
	d1, m1 := digest.FromString("config 1"), digest.FromString("manifest 1")
	d2, m2 := digest.FromString("config 2"), digest.FromString("manifest 2")
	for _, w := range [][2]digest.Digest{{d1, m1}, {d2, m2}} {
		if err := s.RecordRef(ref, w[0], w[1]); err != nil {
			t.Fatal(err)
		}
		if d, m, ok, err := s.LookupRef(ref); !ok || err != nil || d != w[0] || m != w[1] {
			t.Fatalf("LookupRef = %s, %s, %v, %v; want %s, %s", d, m, ok, err, w[0], w[1])
		}
	}
	if err := s.RecordRef(ref, "sha256:nope", m1); err == nil {
		t.Error("RecordRef took an image digest that does not parse")
	}
	if err := s.RecordRef(ref, d1, ""); err == nil {
		t.Error("RecordRef took an empty manifest digest")
	}
	if d, _, _, _ := s.LookupRef(ref); d != d2 {
		t.Errorf("a refused RecordRef changed the record to %s", d)
	}
	// A damaged record is an error, never a digest to act on.
	if err := s.Update(func(tx *index.Tx) error {
		return tx.PutRef(index.Ref{Ref: ref, Digest: "sha256:short", Manifest: m1})
	}); err != nil {
		t.Fatal(err)
	}
	if d, _, ok, err := s.LookupRef(ref); ok || !errors.Is(err, cache.ErrInvalid) {
		t.Errorf("LookupRef of a damaged record = %s, %v, %v; want ErrInvalid", d, ok, err)
	}
}
