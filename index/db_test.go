package index

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

func newDB(t *testing.T) *DB {
	t.Helper()
	db := New(filepath.Join(t.TempDir(), "index.db"), 5*time.Second)
	if err := db.Create(); err != nil {
		t.Fatal(err)
	}
	return db
}

// Create leaves an index that exists as it is: another process made it
// first, and its records stay.
func TestCreateKeepsAnExistingIndex(t *testing.T) {
	db := newDB(t)
	d := digest.FromString("t")
	if err := db.Update(func(tx *Tx) error { return tx.Pin(d) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(); err != nil {
		t.Fatal(err)
	}
	var pinned bool
	if err := db.View(func(tx *Tx) error { pinned = tx.Pinned(d); return nil }); err != nil || !pinned {
		t.Fatalf("after a second Create: pinned %v, %v; want the first index kept", pinned, err)
	}
}

// Replace keeps the old file under keep, writes only what fill puts, and
// forgets the damage of the file it replaced.
func TestReplace(t *testing.T) {
	db := newDB(t)
	defer ForgetDamage()
	old := digest.FromString("old")
	if err := db.Update(func(tx *Tx) error { return tx.Pin(old) }); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(db.Path(), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(*Tx) error { return nil }); !errors.Is(err, ErrDamaged) {
		t.Fatalf("View of an empty file: %v, want ErrDamaged", err)
	}
	keep := db.Path() + ".damaged"
	tr := Tree{Digest: digest.FromString("new"), Refs: []string{}}
	if err := db.Replace(keep, func(tx *Tx) error { return tx.PutTree(tr) }); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keep); err != nil || fi.Size() != 0 {
		t.Errorf("the replaced file is not kept as %s: %v", keep, err)
	}
	err := db.View(func(tx *Tx) error {
		if _, err := tx.Tree(tr.Digest); err != nil {
			return err
		}
		if pins, err := tx.Pins(); err != nil || len(pins) != 0 {
			t.Errorf("pins after Replace: %v, %v; want none", pins, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after Replace: %v", err)
	}
}

// A garbled record is an error of its own, never ErrNotFound; a missing
// one is ErrNotFound.
func TestGarbleRecord(t *testing.T) {
	db := newDB(t)
	if err := db.Update(func(tx *Tx) error { return tx.PutMachine(Machine{Name: "m"}) }); err != nil {
		t.Fatal(err)
	}
	if err := db.GarbleRecord("machines", "m"); err != nil {
		t.Fatal(err)
	}
	if err := db.GarbleRecord("generations", "m", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("garbling in a missing bucket: %v, want ErrNotFound", err)
	}
	err := db.View(func(tx *Tx) error {
		if _, err := tx.Machine("m"); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("garbled machine: %v, want a decode error", err)
		}
		if _, err := tx.Machine("n"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing machine: %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A file another process keeps open for writing is ErrLocked once the
// timeout runs out, naming the file.
func TestLockedIndex(t *testing.T) {
	db := newDB(t)
	held, err := bolt.Open(db.Path(), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	err = New(db.Path(), 10*time.Millisecond).Update(func(*Tx) error { return nil })
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), db.Path()) {
		t.Fatalf("Update of a held index: %v, want ErrLocked naming %s", err, db.Path())
	}
}
