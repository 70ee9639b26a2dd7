package cache

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/rootswap/rootswap/internal/fsys"
)

// Rebuild is what rebuilding the index from the disk recovered and lost.
type Rebuild struct {
	Damaged  string   `json:"damaged"`  // where the replaced index.db was kept, relative to the store
	Trees    int      `json:"trees"`    // tree records made from trees/ and manifests/
	Machines int      `json:"machines"` // machine records made from machines/NAME/current, one generation each
	Lost     []string `json:"lost"`     // what the disk cannot tell, one line each
}

// rebuild makes a new index from what is on disk, the way a damaged one
// is recovered: every trees/sha256/<hex> whose manifest (manifests/sha256/
// <hex>, named by the same digest) exists and matches the tree becomes a
// tree record; every machines/NAME/current link to such a tree becomes a
// machine with one generation, reason "recovered". History, health, refs,
// pins and leases live only in the index: they are reported lost, never
// invented. The old file is kept as index.db.damaged-<time>; the new one is
// built under a temporary name and renamed over index.db, so index.db
// exists at every instant. The caller holds the exclusive store lock.
func (s *Store) rebuild() (*Rebuild, error) {
	rb := &Rebuild{Lost: []string{}}
	trees, err := s.TreeDigests()
	if err != nil {
		return nil, err
	}
	var recs []Tree
	recovered := map[digest.Digest]bool{}
	for _, d := range trees {
		t, why := s.recoverTree(d)
		if why != "" {
			rb.Lost = append(rb.Lost, fmt.Sprintf("tree %s: not recovered: %s (verify --repair removes it as a leftover)", d, why))
			continue
		}
		recs = append(recs, t)
		recovered[d] = true
	}
	type mach struct {
		name string
		gen  Generation
	}
	var machs []mach
	ents, err := os.ReadDir(s.MachinesDir())
	if err != nil {
		return nil, fmt.Errorf("machines: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		name := e.Name()
		d, err := s.ReadMachineLink(name)
		switch {
		case errors.Is(err, ErrNotFound):
			rb.Lost = append(rb.Lost, fmt.Sprintf("machine %s: not recovered: it has no current link", name))
			continue
		case err != nil:
			rb.Lost = append(rb.Lost, fmt.Sprintf("%v: not recovered", err))
			continue
		case !recovered[d]:
			rb.Lost = append(rb.Lost, fmt.Sprintf("machine %s: not recovered: its current tree %s was not", name, d))
			continue
		}
		when := time.Now().UTC()
		if fi, err := os.Lstat(s.MachineLink(name)); err == nil {
			when = fi.ModTime().UTC()
		}
		machs = append(machs, mach{name, Generation{Number: 1, Digest: d, Time: when, Reason: "recovered"}})
	}
	rb.Trees, rb.Machines = len(recs), len(machs)
	if len(machs) > 0 {
		rb.Lost = append(rb.Lost, fmt.Sprintf("the history of %d machine(s): every generation but the current one, health counts, failed marks", len(machs)))
	}
	rb.Lost = append(rb.Lost, "image refs of every tree (the next prepare of an image records its ref again)", "every pin (pin again what gc must keep)", "every lease (imports under way fail and can be run again)")

	rb.Damaged = "index.db.damaged-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	err = writeIndex(s.indexPath(), filepath.Join(s.root, rb.Damaged), func(tx *bolt.Tx) error {
		t := &Tx{tx}
		for _, r := range recs {
			if err := t.PutTree(r); err != nil {
				return err
			}
		}
		for _, m := range machs {
			g, err := t.AppendGeneration(m.name, m.gen)
			if err != nil {
				return err
			}
			if err := t.PutMachine(Machine{Name: m.name, Current: g.Number}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rebuild index %s: %w", s.indexPath(), err)
	}
	damagedIndexes.Delete(s.indexPath())
	return rb, nil
}

// recoverTree makes tree d's record from its manifest, or says why not.
func (s *Store) recoverTree(d digest.Digest) (Tree, string) {
	fi, err := os.Stat(s.ManifestPath(d))
	if err != nil {
		return Tree{}, "manifest: " + err.Error()
	}
	mf, err := s.OpenManifest(d)
	if err != nil {
		return Tree{}, "manifest: " + err.Error()
	}
	defer mf.Close()
	h := sha256.New()
	sc := bufio.NewScanner(io.TeeReader(mf, h))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	t := Tree{Digest: d, Refs: []string{}, Created: fi.ModTime().UTC(), LastUsed: fi.ModTime().UTC()}
	for sc.Scan() {
		me, err := ParseManifestLine(sc.Text())
		if err != nil {
			return Tree{}, "manifest: " + err.Error()
		}
		t.Files++
		if me.Kind == KindFile {
			t.Bytes += me.Size
		}
	}
	if err := sc.Err(); err != nil {
		return Tree{}, "manifest: " + err.Error()
	}
	t.Manifest = hashDigest(h)
	if probs := s.verifyTree(t, nil); len(probs) > 0 {
		return Tree{}, fmt.Sprintf("does not match its manifest (%d problems; first: %s)", len(probs), probs[0])
	}
	return t, ""
}

// writeIndex makes an index with all buckets, filled by fill, under a
// temporary name next to path, synced, then renamed to path. With keep
// == "" it never replaces an index.db that exists (another process made
// one first; theirs is as good); otherwise the existing file is first
// hard-linked to keep and then replaced. A crash leaves path as it was or
// as it is meant to be, never half made.
func writeIndex(path, keep string, fill func(*bolt.Tx) error) error {
	tmp := filepath.Join(filepath.Dir(path), fsys.TempName(fmt.Sprintf(".index.db.%d.", os.Getpid())))
	defer os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put([]byte("version"), []byte("1")); err != nil {
			return err
		}
		if fill != nil {
			return fill(tx)
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if keep == "" {
		err = fsys.RenameNoReplace(tmp, path)
		if errors.Is(err, os.ErrExist) {
			err = nil
		}
	} else {
		if err := os.Link(path, keep); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(path))
}
