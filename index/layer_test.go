package index

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// oldIndex writes an index the way the version before layers and refs
// did: the six first buckets only, with a tree in it.
func oldIndex(t *testing.T) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "index.db")
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range requiredBuckets {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put([]byte("version"), []byte("1")); err != nil {
			return err
		}
		return tx.Bucket(bucketTrees).Put([]byte(digest.FromString("old")), []byte(`{"digest":"`+digest.FromString("old")+`","refs":[]}`))
	})
	if cerr := bdb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return New(path, 5*time.Second)
}

// An index written before the layers, blobs and refs buckets is sound:
// View reads them as empty, the first Update creates them, and the
// records it had are still there.
func TestIndexWithoutAddedBuckets(t *testing.T) {
	db := oldIndex(t)
	defer ForgetDamage()
	l := Layer{DiffID: digest.FromString("diff"), Blobs: []digest.Digest{digest.FromString("blob")}}
	err := db.View(func(tx *Tx) error {
		if ls, err := tx.Layers(); err != nil || len(ls) != 0 {
			t.Errorf("Layers of an old index: %v, %v; want none", ls, err)
		}
		if rs, err := tx.Refs(); err != nil || len(rs) != 0 {
			t.Errorf("Refs of an old index: %v, %v; want none", rs, err)
		}
		if _, err := tx.Layer(l.DiffID); !errors.Is(err, ErrNotFound) {
			t.Errorf("Layer of an old index: %v, want ErrNotFound", err)
		}
		if _, err := tx.LayerByBlob(l.Blobs[0]); !errors.Is(err, ErrNotFound) {
			t.Errorf("LayerByBlob of an old index: %v, want ErrNotFound", err)
		}
		if _, err := tx.Ref("docker://h/r:t"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Ref of an old index: %v, want ErrNotFound", err)
		}
		if errs := tx.Check(); len(errs) > 0 {
			t.Errorf("Check of an old index: %v", errs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View of an old index: %v", err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutLayer(l) }); err != nil {
		t.Fatalf("PutLayer into an old index: %v", err)
	}
	err = db.View(func(tx *Tx) error {
		if _, err := tx.Tree(digest.FromString("old")); err != nil {
			t.Errorf("the old tree record: %v", err)
		}
		if got, err := tx.LayerByBlob(l.Blobs[0]); err != nil || got != l.DiffID {
			t.Errorf("LayerByBlob after PutLayer: %s, %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A layer record maps its blobs to itself; deleting it drops those
// mappings, but not a blob that maps to another layer by now.
func TestLayerRecords(t *testing.T) {
	db := newDB(t)
	a := Layer{DiffID: digest.FromString("a"), Blobs: []digest.Digest{digest.FromString("a.gz"), digest.FromString("a.zst")},
		Manifest: digest.FromString("mf"), Files: 3, Bytes: 10, NewBytes: 4, Created: time.Unix(1, 0).UTC()}
	b := Layer{DiffID: digest.FromString("b"), Blobs: []digest.Digest{digest.FromString("a.zst")}}
	err := db.Update(func(tx *Tx) error {
		if err := tx.PutLayer(a); err != nil {
			return err
		}
		return tx.PutLayer(b) // a.zst now maps to b
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		got, err := tx.Layer(a.DiffID)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("Layer: %+v, %v; want %+v", got, err, a)
		}
		if ls, err := tx.Layers(); err != nil || len(ls) != 2 {
			t.Errorf("Layers: %v, %v; want 2", ls, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.DeleteLayer(a.DiffID) }); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		if _, err := tx.Layer(a.DiffID); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted layer: %v, want ErrNotFound", err)
		}
		if _, err := tx.LayerByBlob(digest.FromString("a.gz")); !errors.Is(err, ErrNotFound) {
			t.Errorf("blob of the deleted layer: %v, want ErrNotFound", err)
		}
		if d, err := tx.LayerByBlob(digest.FromString("a.zst")); err != nil || d != b.DiffID {
			t.Errorf("blob another layer claimed: %s, %v; want %s", d, err, b.DiffID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.DeleteLayer(a.DiffID) }); err != nil {
		t.Errorf("DeleteLayer of a missing layer: %v, want nil", err)
	}
}

// Refs round-trip, and a deleted one is not found.
func TestRefRecords(t *testing.T) {
	db := newDB(t)
	r := Ref{Ref: "docker://h/r:t", Digest: digest.FromString("cfg"), Manifest: digest.FromString("m"), Resolved: time.Unix(2, 0).UTC()}
	if err := db.Update(func(tx *Tx) error { return tx.PutRef(r) }); err != nil {
		t.Fatal(err)
	}
	err := db.View(func(tx *Tx) error {
		got, err := tx.Ref(r.Ref)
		if err != nil || got != r {
			t.Errorf("Ref: %+v, %v; want %+v", got, err, r)
		}
		if rs, err := tx.Refs(); err != nil || len(rs) != 1 {
			t.Errorf("Refs: %v, %v", rs, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *Tx) error {
		if err := tx.DeleteRef(r.Ref); err != nil {
			return err
		}
		if err := tx.DeleteRef(r.Ref); err != nil {
			return err
		}
		_, err := tx.Ref(r.Ref)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted ref: %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A layer directory record reads back as written, an old index reads the
// layerdirs bucket as empty, and a tree's Stack survives its record.
func TestLayerDirRecords(t *testing.T) {
	old := oldIndex(t)
	defer ForgetDamage()
	err := old.View(func(tx *Tx) error {
		if ls, err := tx.LayerDirs(); err != nil || len(ls) != 0 {
			t.Errorf("LayerDirs of an old index: %v, %v; want none", ls, err)
		}
		if _, err := tx.LayerDir(digest.FromString("c")); !errors.Is(err, ErrNotFound) {
			t.Errorf("LayerDir of an old index: %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db := newDB(t)
	low := LayerDir{Chain: digest.FromString("a"), DiffID: digest.FromString("a"), Manifest: digest.FromString("mf"),
		Files: 3, Bytes: 10, Created: time.Unix(1, 0).UTC()}
	high := LayerDir{Chain: digest.FromString("ab"), DiffID: digest.FromString("b"), Parent: low.Chain}
	tree := Tree{Digest: digest.FromString("img"), Refs: []string{}, Layers: []digest.Digest{low.DiffID, high.DiffID},
		Stack: []digest.Digest{low.Chain, high.Chain}}
	err = db.Update(func(tx *Tx) error {
		for _, l := range []LayerDir{low, high} {
			if err := tx.PutLayerDir(l); err != nil {
				return err
			}
		}
		return tx.PutTree(tree)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		if got, err := tx.LayerDir(low.Chain); err != nil || !reflect.DeepEqual(got, low) {
			t.Errorf("LayerDir: %+v, %v; want %+v", got, err, low)
		}
		if ls, err := tx.LayerDirs(); err != nil || len(ls) != 2 {
			t.Errorf("LayerDirs: %v, %v; want 2", ls, err)
		}
		if got, err := tx.Tree(tree.Digest); err != nil || !reflect.DeepEqual(got.Stack, tree.Stack) {
			t.Errorf("Tree.Stack: %v, %v; want %v", got.Stack, err, tree.Stack)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.DeleteLayerDir(low.Chain) }); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		if _, err := tx.LayerDir(low.Chain); !errors.Is(err, ErrNotFound) {
			t.Errorf("LayerDir after DeleteLayerDir: %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
