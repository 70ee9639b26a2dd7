package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// Damage is one way index.db gets broken: a disk error, a truncation by a
// full or failing disk, an editor, a bad copy.
type damage struct {
	name string
	do   func(t *testing.T, path string)
}

const testPage = 4096

func pageFlags(b []byte, n int) uint16 { return binary.LittleEndian.Uint16(b[n*testPage+8:]) }

func scribble(t *testing.T, path string, off, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(uint64(off), uint64(n)))
	for i := off; i < off+n && i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// findPage returns the first page after the metas whose header has flags.
func findPage(t *testing.T, path string, flags uint16) int {
	t.Helper()
	b, _ := os.ReadFile(path)
	for n := 2; (n+1)*testPage <= len(b); n++ {
		if pageFlags(b, n) == flags {
			return n
		}
	}
	t.Fatalf("%s has no page with flags %#x", path, flags)
	return 0
}

// treesRoot returns the root page of the trees bucket, a branch page once
// fillIndex has run. It reads bbolt's layout itself (package index is the
// only importer of bbolt): the newer meta page names the root bucket's
// page, a leaf whose "trees" element's value starts with the bucket's
// root page.
func treesRoot(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 2*testPage {
		t.Fatalf("%s: %d bytes: %v", path, len(b), err)
	}
	le := binary.LittleEndian
	meta := b[16:] // page header, then magic, version, page size, flags, root bucket (root, sequence), freelist, pgid, txid
	if m1 := b[testPage+16:]; le.Uint64(m1[48:]) > le.Uint64(meta[48:]) {
		meta = m1
	}
	top := int(le.Uint64(meta[16:]))
	if pageFlags(b, top) != 0x02 {
		t.Fatalf("the root bucket's page %d is no leaf page", top)
	}
	p := b[top*testPage:]
	root := -1
	for i := range int(le.Uint16(p[10:])) {
		e := 16 + 16*i // flags, pos, ksize, vsize; pos counts from the element
		pos, ksize := e+int(le.Uint32(p[e+4:])), int(le.Uint32(p[e+8:]))
		if string(p[pos:pos+ksize]) == "trees" {
			root = int(le.Uint64(p[pos+ksize:]))
		}
	}
	if root < 0 || pageFlags(b, root) != 0x01 {
		t.Fatalf("the trees bucket's root page %d is no branch page", root)
	}
	return root
}

var damages = []damage{
	{"zero-length", func(t *testing.T, p string) { os.Truncate(p, 0) }},
	{"truncated to half", func(t *testing.T, p string) {
		fi, _ := os.Stat(p)
		os.Truncate(p, fi.Size()/2)
	}},
	{"truncated to one page", func(t *testing.T, p string) { os.Truncate(p, testPage) }},
	{"truncated mid-page", func(t *testing.T, p string) { os.Truncate(p, 3*testPage+100) }},
	{"random bytes over the meta pages", func(t *testing.T, p string) { scribble(t, p, 0, 2*testPage) }},
	{"random bytes over the freelist page", func(t *testing.T, p string) { scribble(t, p, findPage(t, p, 0x10)*testPage, testPage) }},
	{"random bytes over a branch page", func(t *testing.T, p string) { scribble(t, p, treesRoot(t, p)*testPage, testPage) }},
	{"a branch page that points to itself", func(t *testing.T, p string) {
		b, _ := os.ReadFile(p)
		n := treesRoot(t, p)
		binary.LittleEndian.PutUint64(b[n*testPage+16+8:], uint64(n))
		os.WriteFile(p, b, 0o600)
	}},
	{"random bytes over a branch page's elements", func(t *testing.T, p string) { scribble(t, p, treesRoot(t, p)*testPage+16, 64) }},
}

// fillIndex writes enough records that the trees bucket needs branch pages
// and the file a freelist page.
func fillIndex(t *testing.T, s *Store) {
	t.Helper()
	for round := 0; round < 3; round++ {
		err := s.Update(func(tx *index.Tx) error {
			for i := 0; i < 400; i++ {
				d := digest.FromString(fmt.Sprint(round, i))
				if err := tx.PutTree(index.Tree{Digest: d, Refs: []string{"img:" + fmt.Sprint(i)}, Created: time.Now()}); err != nil {
					return err
				}
				if round > 0 {
					if err := tx.DeleteTree(digest.FromString(fmt.Sprint(round-1, i))); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDamagedIndexIsAnError(t *testing.T) {
	for _, dm := range damages {
		t.Run(dm.name, func(t *testing.T) {
			s, err := Open(context.Background(), t.TempDir(), Options{LockTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			fillIndex(t, s)
			dm.do(t, s.indexPath())
			check := func(what string, err error, mustFail bool) {
				t.Helper()
				if err == nil && !mustFail {
					return // this damage spares what the call reads
				}
				if !errors.Is(err, index.ErrDamaged) || !strings.Contains(err.Error(), s.indexPath()) ||
					!strings.Contains(err.Error(), "verify --repair") || strings.Contains(err.Error(), "\n") {
					t.Errorf("%s: %v; want one line wrapping index.ErrDamaged, naming %s and verify --repair", what, err, s.indexPath())
				}
			}
			// Each call as a new process would make it: nothing remembered.
			fresh := func() *Store { index.ForgetDamage(); return &Store{root: s.root, lockTimeout: s.lockTimeout} }
			check("View", fresh().View(func(tx *index.Tx) error { _, err := tx.Trees(); return err }), false)
			check("Update", fresh().Update(func(tx *index.Tx) error { return tx.PutTree(index.Tree{Digest: digest.FromString("new")}) }), false)
			check("View machines", fresh().View(func(tx *index.Tx) error { _, err := tx.Machines(); return err }), false)
			st := fresh()
			_, err = st.Verify(context.Background(), nil, false)
			check("Verify", err, true)
			// Once seen, the damage answers every call of the process, at
			// once: an open that panicked may have left bbolt's lock held.
			start := time.Now()
			check("Update after Verify", st.Update(func(tx *index.Tx) error { return nil }), true)
			if d := time.Since(start); d > s.lockTimeout {
				t.Errorf("Update after Verify took %s: it waited for a lock", d)
			}
			index.ForgetDamage()
		})
	}
}

// A file truncated while mapped faults (SIGBUS) on the next read of a lost
// page: that is an error too, not a crash.
func TestIndexFaultIsAnError(t *testing.T) {
	s, err := Open(context.Background(), t.TempDir(), Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fillIndex(t, s)
	defer index.ForgetDamage()
	err = s.View(func(tx *index.Tx) error {
		if err := os.Truncate(s.indexPath(), 0); err != nil {
			t.Fatal(err)
		}
		_, err := tx.Trees()
		return err
	})
	if !errors.Is(err, index.ErrDamaged) {
		t.Fatalf("View over a truncated mapping: %v, want index.ErrDamaged", err)
	}
	t.Log(err)
}

// Open cleans dead staging without the index: `run` must start a machine
// whose link is sound even when index.db is damaged.
func TestOpenWithDamagedIndex(t *testing.T) {
	root := t.TempDir()
	s, err := Open(context.Background(), root, Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer index.ForgetDamage()
	if err := os.Mkdir(filepath.Join(s.TmpDir(), "import-1-dead"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Truncate(s.indexPath(), 0)
	if _, err := Open(context.Background(), root, Options{LockTimeout: 5 * time.Second}); err != nil {
		t.Fatalf("Open with a damaged index: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.TmpDir(), "import-1-dead")); !os.IsNotExist(err) {
		t.Errorf("dead staging not removed: %v", err)
	}
}

// TestEveryPageDamaged overwrites each page of a filled index in turn
// (its header with random bytes, or the whole page with zeros) and runs
// every kind of access, Verify included: none may panic, and each either
// works or fails with index.ErrDamaged. bbolt's own Check runs in a
// goroutine no recover reaches, so whatever it would assert on must be
// caught before it runs.
func TestEveryPageDamaged(t *testing.T) {
	base, err := Open(context.Background(), t.TempDir(), Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fillIndex(t, base)
	clean, err := os.ReadFile(base.indexPath())
	if err != nil {
		t.Fatal(err)
	}
	const pageSize = 4096
	rng := rand.New(rand.NewPCG(3, 4))
	defer index.ForgetDamage()
	for page := 0; page*pageSize < len(clean); page++ {
		for _, how := range []string{"header", "zeros"} {
			buf := append([]byte(nil), clean...)
			off := page * pageSize
			switch how {
			case "header":
				for i := 0; i < 16; i++ {
					buf[off+i] = byte(rng.Uint32())
				}
			case "zeros":
				clear(buf[off:min(len(buf), off+pageSize)])
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "index.db"), buf, 0o600); err != nil {
				t.Fatal(err)
			}
			index.ForgetDamage()
			s := &Store{root: dir, lockTimeout: 5 * time.Second}
			ok := func(what string, err error) {
				if err != nil && !errors.Is(err, index.ErrDamaged) {
					t.Errorf("page %d (%s): %s: %v, want nil or index.ErrDamaged", page, how, what, err)
				}
			}
			ok("View", s.View(func(tx *index.Tx) error { _, err := tx.Trees(); return err }))
			index.ForgetDamage()
			ok("Check", s.View(func(tx *index.Tx) error {
				if errs := tx.Check(); len(errs) > 0 {
					return fmt.Errorf("%w: %v", index.ErrDamaged, errs[0])
				}
				return nil
			}))
			index.ForgetDamage()
			ok("Update", s.Update(func(tx *index.Tx) error { return tx.PutTree(index.Tree{Digest: digest.FromString("new")}) }))
		}
	}
}
