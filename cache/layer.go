package cache

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
	"github.com/rootswap/rootswap/internal/fsys"
)

// The kinds of a layer manifest's lines that are no tree entry: whiteouts,
// and the xattrs of the entry before (tree manifests leave them to the
// files; a layer's list must carry a directory's too).
const (
	kindWhiteout Kind = 'w'
	kindOpaque   Kind = 'o'
	kindXattr    Kind = 'x'
)

// Whiteout is a layer's instruction to hide what lower layers hold at
// Name (a clean, relative name): the name and its subtree, or with Opaque
// the directory Name's lower children.
type Whiteout struct {
	Name   string
	Opaque bool
}

// LayerManifest is one image layer as data: its entries in archive order
// (a regular file names its object; a hard link may name a target of a
// lower layer, and has no Object and Size 0) and its whiteouts in their
// own order. Blob is the compressed blob it was read from (ReadLayer
// gives the first one the record lists).
type LayerManifest struct {
	DiffID, Blob digest.Digest
	Entries      []ManifestEntry
	Whiteouts    []Whiteout
}

// errFinished is the error of a LayerWriter used after Commit or Abort.
var errFinished = errors.New("layer writer already committed or aborted")

// LayerWriter stores one layer's regular files as objects and commits its
// layer record. Like a Builder it holds the shared store lock, a lease
// and a staging directory from NewLayerWriter until Commit or Abort, so
// gc never deletes an object it stored before the record keeps it.
// Several may be open at once in one process; one is used by one
// goroutine.
type LayerWriter struct {
	s       *Store
	lock    *fsys.Lock // shared store lock
	st      *Staging
	staged  *fsys.Dir // the staging, where a new file is written before it becomes an object
	ow      *objectWriter
	n       int  // staged files so far, for their names
	done    bool // committed: the lease went with the index record
	started time.Time
	times   Times
}

// Times is how long w's steps took, complete once Commit returned.
func (w *LayerWriter) Times() Times { return w.times }

// NewLayerWriter starts storing one layer. The caller must Commit or
// Abort it.
func (s *Store) NewLayerWriter(ctx context.Context) (*LayerWriter, error) {
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return nil, err
	}
	w := &LayerWriter{s: s, lock: lock, started: time.Now()}
	if w.st, err = s.NewStaging("layer"); err != nil {
		lock.Unlock()
		return nil, err
	}
	// The lease is written before the first object, so gc keeps them.
	now := time.Now()
	err = s.Update(func(tx *index.Tx) error {
		return tx.PutLease(index.Lease{ID: w.st.ID, Created: now, Expires: now.Add(LeaseTTL), PID: os.Getpid()})
	})
	if err == nil {
		w.staged, err = fsys.OpenDir(w.st.Dir)
	}
	if err == nil {
		w.ow, err = s.newObjectWriter()
	}
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("staging: %w", err)
	}
	return w, nil
}

// Put stores regular file e's content, exactly e.Size bytes read from r
// (fewer is an error), as the object the Builder would name it (content
// and metadata), and returns the object's digest: the shape of
// snapshot.PutFunc. An object the store has costs no write (files up to
// smallFile are hashed in memory first); two writers storing the same
// object at once both succeed. An empty file is stored as nothing: its
// digest names it, and a tree creates it from the entry.
func (w *LayerWriter) Put(e Entry, r io.Reader) (digest.Digest, error) {
	if w.st == nil {
		return "", fmt.Errorf("entry %q: %w", e.Name, errFinished)
	}
	if err := checkEntry(&e); err != nil {
		return "", fmt.Errorf("entry %q: %w", e.Name, err)
	}
	if e.Kind != KindFile {
		return "", fmt.Errorf("entry %q: put of a %q entry: %w", e.Name, e.Kind, ErrInvalid)
	}
	w.n++
	obj, err := w.ow.put(w.staged, strconv.Itoa(w.n), &e, r, false)
	if err != nil {
		return "", fmt.Errorf("entry %q: %w", e.Name, err)
	}
	return obj, nil
}

// Commit publishes layer l, whose regular files w stored (or the store
// had), in the fixed order: the layer manifest is written in the staging,
// the file system is synced, the manifest is renamed into layers/ under
// its own digest and the directory synced, and one index transaction
// writes the layer record and drops the lease. A record the index has
// already is kept, with l.Blob added to its blobs. It returns the record
// as the index now has it. Either way the LayerWriter is finished.
func (w *LayerWriter) Commit(ctx context.Context, l LayerManifest) (index.Layer, error) {
	if w.st == nil {
		return index.Layer{}, fmt.Errorf("layer %s: %w", l.DiffID, errFinished)
	}
	defer w.Abort()
	w.times.Write = time.Since(w.started)
	if err := checkLayer(&l); err != nil {
		return index.Layer{}, err
	}
	var existing index.Layer
	err := w.s.View(func(tx *index.Tx) (err error) { existing, err = tx.Layer(l.DiffID); return err })
	if err == nil {
		return w.record(l, existing)
	}
	if !errors.Is(err, ErrNotFound) {
		return index.Layer{}, err
	}
	rec := index.Layer{DiffID: l.DiffID, NewBytes: w.ow.newBytes}
	// 1. The manifest, in the staging.
	if rec.Manifest, err = writeLayerManifest(filepath.Join(w.st.Dir, "manifest"), &l, &rec); err != nil {
		return index.Layer{}, fmt.Errorf("layer %s: manifest: %w", l.DiffID, err)
	}
	failpoint.Hit("cache-layer-staged")
	// 2. Objects and manifest reach the disk before any name points at
	//    them.
	start := time.Now()
	if err := fsys.Syncfs(w.s.root); err != nil {
		return index.Layer{}, err
	}
	w.times.Sync = time.Since(start)
	failpoint.Hit("cache-layer-synced")
	// 3. The manifest renamed in under its digest, and made durable. The
	//    same content under the same name is the same file, so a writer of
	//    the same layer renaming over it changes nothing.
	dst := w.s.LayerManifestPath(rec.Manifest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return index.Layer{}, fmt.Errorf("layer %s: %w", l.DiffID, err)
	}
	if err := os.Rename(filepath.Join(w.st.Dir, "manifest"), dst); err != nil {
		return index.Layer{}, fmt.Errorf("layer %s: %w", l.DiffID, err)
	}
	if err := fsys.SyncDir(filepath.Dir(dst)); err != nil {
		return index.Layer{}, err
	}
	failpoint.Hit("cache-layer-manifest-renamed")
	// 4. The index record, and the lease goes in the same transaction.
	return w.record(l, rec)
}

// record is step 4 of Commit: it writes rec, or keeps the record a
// concurrent or earlier commit of the layer made (adding l.Blob), and
// drops the lease.
func (w *LayerWriter) record(l LayerManifest, rec index.Layer) (index.Layer, error) {
	failpoint.Hit("cache-layer-before-index")
	err := w.s.Update(func(tx *index.Tx) error {
		if old, err := tx.Layer(l.DiffID); err == nil {
			rec = old
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if rec.Created.IsZero() {
			rec.Created = time.Now().UTC()
		}
		if l.Blob != "" && !slices.Contains(rec.Blobs, l.Blob) {
			rec.Blobs = append(rec.Blobs, l.Blob)
		}
		if rec.Blobs == nil {
			rec.Blobs = []digest.Digest{}
		}
		if err := tx.PutLayer(rec); err != nil {
			return err
		}
		return tx.DeleteLease(w.st.ID)
	})
	if err != nil {
		return index.Layer{}, fmt.Errorf("layer %s: %w", l.DiffID, err)
	}
	w.done = true
	w.times.Publish = time.Since(w.started) - w.times.Write - w.times.Sync
	failpoint.Hit("cache-layer-after-index")
	return rec, nil
}

// checkLayer refuses what would make a bad record or path: a diffID or
// blob that is not a digest, an entry checkStored refuses, a whiteout
// without a name.
func checkLayer(l *LayerManifest) error {
	if err := l.DiffID.Validate(); err != nil {
		return fmt.Errorf("layer %q: %w: %w", l.DiffID, ErrInvalid, err)
	}
	if l.Blob != "" {
		if err := l.Blob.Validate(); err != nil {
			return fmt.Errorf("layer %s: blob %q: %w: %w", l.DiffID, l.Blob, ErrInvalid, err)
		}
	}
	for i := range l.Entries {
		if err := checkStored(&l.Entries[i]); err != nil {
			return fmt.Errorf("layer %s: entry %q: %w", l.DiffID, l.Entries[i].Name, err)
		}
		if k := l.Entries[i].Kind; k == kindWhiteout || k == kindOpaque || k == kindXattr {
			return fmt.Errorf("layer %s: entry %q: kind %q: %w", l.DiffID, l.Entries[i].Name, k, ErrInvalid)
		}
	}
	for _, wh := range l.Whiteouts {
		if wh.Name == "" {
			return fmt.Errorf("layer %s: a whiteout without a name: %w", l.DiffID, ErrInvalid)
		}
	}
	return nil
}

// writeLayerManifest writes l's lines, gzip-compressed, to a new file at
// path: each entry as a tree manifest line, then each whiteout as a line
// of kind 'w' (or 'o' for an opaque one) with no object; an entry's
// xattrs follow it, one line of kind 'x' each (name: the key, link: the
// value), in key order. It fills rec's counts and returns the digest of
// the lines. Layers and layer directories both list their entries so.
func writeLayerManifest(path string, l *LayerManifest, rec *index.Layer) (digest.Digest, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	mh := sha256.New()
	mz, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	mw := bufio.NewWriterSize(io.MultiWriter(mz, mh), 64<<10)
	for i := range l.Entries {
		me := &l.Entries[i]
		if _, err := mw.WriteString(manifestLine(&me.Entry, me.Object)); err != nil {
			return "", err
		}
		for _, k := range slices.Sorted(maps.Keys(me.Xattrs)) {
			x := Entry{Name: k, Kind: kindXattr, Linkname: string(me.Xattrs[k])}
			if _, err := mw.WriteString(manifestLine(&x, "")); err != nil {
				return "", err
			}
		}
		if me.Kind == KindFile {
			rec.Bytes += me.Size
		}
	}
	for _, wh := range l.Whiteouts {
		e := Entry{Name: wh.Name, Kind: kindWhiteout}
		if wh.Opaque {
			e.Kind = kindOpaque
		}
		if _, err := mw.WriteString(manifestLine(&e, "")); err != nil {
			return "", err
		}
	}
	rec.Files = int64(len(l.Entries) + len(l.Whiteouts))
	if err := mw.Flush(); err != nil {
		return "", err
	}
	if err := mz.Close(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return hashDigest(mh), nil
}

// Abort discards the staging (the objects stay, for gc to judge) and
// drops the lease. It is safe to call after Commit and more than once.
func (w *LayerWriter) Abort() {
	if w.st == nil {
		return
	}
	// Best effort: a lease left behind expires, and the next command
	// removes staging whose lock is free.
	if !w.done {
		w.s.Update(func(tx *index.Tx) error { return tx.DeleteLease(w.st.ID) })
	}
	if w.staged != nil {
		w.staged.Close()
		w.staged = nil
	}
	w.ow.close()
	w.ow = nil
	w.st.Remove()
	w.st = nil
	w.lock.Unlock()
}

// maxPresize bounds the entries readLayerManifest allocates up front
// from a record's count.
const maxPresize = 1 << 20

// LayerManifestPath is where the layer manifest whose lines hash to d
// lives (whether or not it exists).
func (s *Store) LayerManifestPath(d digest.Digest) string {
	return filepath.Join(s.root, "layers", string(d.Algorithm()), d.Encoded())
}

// ReadLayer returns layer diffID as its record and manifest hold it. A
// missing record is an error wrapping ErrNotFound; a manifest that is
// missing or does not hash to what the record says is an error naming the
// layer (wrapping ErrInvalid for a mismatch or a bad line). It takes no
// lock: a caller that builds from the layer's objects holds the shared
// store lock from before ReadLayer until its tree is committed, or gc may
// drop a layer no tree keeps in between.
func (s *Store) ReadLayer(diffID digest.Digest) (LayerManifest, error) {
	var rec index.Layer
	if err := s.View(func(tx *index.Tx) (err error) { rec, err = tx.Layer(diffID); return err }); err != nil {
		return LayerManifest{}, err
	}
	l, err := s.readLayerManifest(rec)
	if err != nil {
		return LayerManifest{}, fmt.Errorf("layer %s: %w", diffID, err)
	}
	return l, nil
}

// readLayerManifest parses rec's manifest and checks its digest.
func (s *Store) readLayerManifest(rec index.Layer) (LayerManifest, error) {
	// The record's count sizes the list, so a large layer is not copied
	// as the list grows; a count no manifest line backs costs no more than
	// the bound.
	l := LayerManifest{DiffID: rec.DiffID, Entries: make([]ManifestEntry, 0, min(max(rec.Files, 0), maxPresize))}
	if len(rec.Blobs) > 0 {
		l.Blob = rec.Blobs[0]
	}
	if rec.Manifest.Validate() != nil {
		return l, fmt.Errorf("manifest %q: %w", rec.Manifest, ErrInvalid)
	}
	f, err := os.Open(s.LayerManifestPath(rec.Manifest))
	if err != nil {
		return l, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return l, fmt.Errorf("manifest %s: %w: %w", rec.Manifest, ErrInvalid, err)
	}
	h := sha256.New()
	sc := bufio.NewScanner(io.TeeReader(zr, h))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		me, err := ParseManifestLine(sc.Text())
		if err != nil {
			return l, fmt.Errorf("manifest %s: %w", rec.Manifest, err)
		}
		switch me.Kind {
		case kindXattr:
			if len(l.Entries) == 0 {
				return l, fmt.Errorf("manifest %s: an xattr line before any entry: %w", rec.Manifest, ErrInvalid)
			}
			last := &l.Entries[len(l.Entries)-1]
			if last.Xattrs == nil {
				last.Xattrs = map[string][]byte{}
			}
			last.Xattrs[me.Name] = []byte(me.Linkname)
		case kindWhiteout, kindOpaque:
			l.Whiteouts = append(l.Whiteouts, Whiteout{Name: me.Name, Opaque: me.Kind == kindOpaque})
		default:
			// A parsed name may share the memory of its whole line; the
			// list lives as long as a merge, so it keeps only the name.
			me.Name = strings.Clone(me.Name)
			me.Linkname = strings.Clone(me.Linkname)
			l.Entries = append(l.Entries, me)
		}
	}
	if err := sc.Err(); err != nil {
		return l, fmt.Errorf("manifest %s: %w: %w", rec.Manifest, ErrInvalid, err)
	}
	if got := hashDigest(h); got != rec.Manifest {
		return l, fmt.Errorf("manifest hashes to %s, index says %s: %w", got, rec.Manifest, ErrInvalid)
	}
	return l, nil
}
