package cache

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
	"github.com/rootswap/rootswap/internal/fsys"
)

// Builder stages one tree. It holds the shared store lock and a lease from
// NewBuilder until Commit or Abort, so gc never deletes an object it links.
// A Builder is not safe for concurrent use.
type Builder struct {
	s        *Store
	lock     *fsys.Lock // shared store lock
	st       *Staging
	rootfs   *fsys.Dir
	mf       *os.File
	mz       *gzip.Writer
	mw       *bufio.Writer
	mh       hash.Hash
	dirs     []Entry           // applied last, deepest first: read-only directories must stay writable until then
	groups   map[string]string // hard link target → the copy later links join, once the target hit the link limit
	ow       *objectWriter
	sawRoot  bool
	done     bool // committed: the lease went with the index record
	stats    index.Tree
	layers   []digest.Digest // recorded in the tree record: BuildFromList's layers
	stack    []digest.Digest // recorded in the tree record: BuildStack's layer directories
	made     []ManifestEntry // with keepMade, every entry as made (a link past the limit as its copy)
	keepMade bool
	config   []byte // the image's config document, committed with the tree record (Describe)
	admit    string // how the signature policy admitted the image (Describe)
	started  time.Time
	times    Times
}

// Times is how long the steps of a Builder's or LayerWriter's life took,
// for -v: Write from its start to Commit (creating entries, storing
// objects), Sync the syncfs, Publish the rest of Commit (manifest, renames,
// directory syncs, index record).
type Times struct {
	Write, Sync, Publish time.Duration
}

// Times is how long b's steps took, complete once Commit returned.
func (b *Builder) Times() Times { return b.times }

// NewBuilder starts staging a tree under tmp/. The caller must Commit or
// Abort it.
func (s *Store) NewBuilder(ctx context.Context) (*Builder, error) {
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return nil, err
	}
	return s.newBuilder(lock)
}

// newBuilder is NewBuilder for a caller that holds the store lock
// already: lock, if not nil, is the Builder's to release.
func (s *Store) newBuilder(lock *fsys.Lock) (*Builder, error) {
	var err error
	b := &Builder{s: s, lock: lock, mh: sha256.New(), started: time.Now()}
	if b.st, err = s.NewStaging("import"); err != nil {
		if lock != nil {
			lock.Unlock()
		}
		return nil, err
	}
	// The lease is written before the first object, so gc keeps them.
	err = s.Update(func(tx *index.Tx) error {
		return tx.PutLease(index.Lease{ID: b.st.ID, Created: b.started, Expires: b.started.Add(LeaseTTL), PID: os.Getpid()})
	})
	if err == nil {
		err = os.Mkdir(filepath.Join(b.st.Dir, "rootfs"), 0o700)
	}
	if err == nil {
		b.rootfs, err = fsys.OpenDir(filepath.Join(b.st.Dir, "rootfs"))
	}
	if err == nil {
		b.mf, err = os.Create(filepath.Join(b.st.Dir, "manifest"))
	}
	if err == nil {
		b.ow, err = s.newObjectWriter()
	}
	if err != nil {
		b.Abort()
		return nil, fmt.Errorf("staging: %w", err)
	}
	// The manifest is mostly digests and names: gzip halves it, or better.
	b.mz, _ = gzip.NewWriterLevel(b.mf, gzip.BestSpeed)
	b.mw = bufio.NewWriterSize(io.MultiWriter(b.mz, b.mh), 64<<10)
	return b, nil
}

// Describe has Commit record, in the tree's own index commit, config (the
// image's config document, index bucket configs) and admitted (how the
// signature policy admitted the image, index.Tree.Admitted): a crash
// leaves the tree with both or leaves no tree. Either may be empty.
func (b *Builder) Describe(config []byte, admitted string) {
	b.config, b.admit = config, admitted
}

// Add creates one entry in the staged tree from an export stream; r
// supplies a regular file's content (exactly e.Size bytes) and is ignored
// otherwise. Entries must come parents first; the caller has validated
// names and hard link targets.
func (b *Builder) Add(e Entry, r io.Reader) error {
	if err := checkEntry(&e); err != nil {
		return fmt.Errorf("entry %q: %w", e.Name, err)
	}
	return b.add(e, func(e *Entry) (digest.Digest, error) { return b.ow.put(b.rootfs, e.Name, e, r, true) })
}

// AddStored creates one entry of a list whose regular files are objects
// the store already has (a manifest's lines, or layers merged into one):
// a file is e.Object hard-linked in, or copied at the link limit. The list
// is hostile input: names go through the same confined creation as Add's
// (an unclean, absolute or escaping name, or one through a symlink, is
// ErrUnsafe), a parent or hard link target must be an earlier entry, and
// an object must exist (else ErrNotFound) with the mode, owner, size and
// mtime e records (else ErrInvalid). On error the caller aborts b.
func (b *Builder) AddStored(e ManifestEntry) error {
	if err := checkStored(&e); err != nil {
		return fmt.Errorf("entry %q: %w", e.Name, err)
	}
	return b.add(e.Entry, func(f *Entry) (digest.Digest, error) { return e.Object, b.linkStored(f, e.Object) })
}

// add creates entry e, the one place each kind of entry is made; file
// creates a regular file's content and returns its object.
func (b *Builder) add(e Entry, file func(*Entry) (digest.Digest, error)) error {
	var obj digest.Digest
	var err error
	switch e.Kind {
	case KindDir:
		if e.Name == "." {
			b.sawRoot = true
		} else {
			err = b.rootfs.Mkdir(e.Name)
		}
		b.dirs = append(b.dirs, e)
	case KindFile:
		obj, err = file(&e)
		b.stats.Bytes += e.Size
	case KindSymlink:
		if err = b.rootfs.Symlink(e.Linkname, e.Name); err == nil {
			err = b.lmeta(&e)
		}
	case KindHardlink:
		obj, err = b.hardlink(&e)
	case KindChar, KindBlock, KindFIFO:
		mode := map[Kind]uint32{KindChar: syscall.S_IFCHR, KindBlock: syscall.S_IFBLK, KindFIFO: syscall.S_IFIFO}[e.Kind]
		err = b.rootfs.Mknod(e.Name, mode|0o600, fsys.Mkdev(e.Devmajor, e.Devminor))
		if err == nil {
			err = b.lmeta(&e)
		}
	default:
		err = fmt.Errorf("kind %q: %w", e.Kind, ErrInvalid)
	}
	if err != nil {
		return fmt.Errorf("entry %q: %w", e.Name, err)
	}
	b.stats.Files++
	if b.keepMade {
		b.made = append(b.made, ManifestEntry{Entry: e, Object: obj})
	}
	_, err = b.mw.WriteString(manifestLine(&e, obj))
	return err
}

// checkStored refuses what a listed entry says about itself: what
// checkEntry refuses, an object that is not a sha256 digest (it becomes a
// path), an object on anything but a regular file.
func checkStored(e *ManifestEntry) error {
	switch {
	case e.Kind == KindFile && !ValidDigest(e.Object):
		return fmt.Errorf("object %q: %w", e.Object, ErrInvalid)
	case e.Kind == KindFile && e.Object.Algorithm() != digest.SHA256:
		return fmt.Errorf("object %s: not sha256: %w", e.Object, ErrInvalid)
	case e.Kind != KindFile && e.Object != "":
		return fmt.Errorf("object %s on a %q entry: %w", e.Object, e.Kind, ErrInvalid)
	}
	return checkEntry(&e.Entry)
}

// linkStored makes regular file e the stored object obj. An empty file
// has no object: it is created, and obj must be the name it would have.
func (b *Builder) linkStored(e *Entry, obj digest.Digest) error {
	if e.Size == 0 {
		if want := hashDigest(objectHasher(e)); obj != want {
			return fmt.Errorf("object %s is not the empty file's %s: %w", obj, want, ErrInvalid)
		}
		return copyInto(b.rootfs, e.Name, e, nil)
	}
	st, err := b.ow.objects.Lstat(obj.Encoded())
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("object %s: %w", obj, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("object %s: %w", obj, err)
	}
	// The object's name covers its metadata, but hashing it again would
	// read every byte; a list that names the wrong object differs in what
	// stat shows (or in content, which verify finds).
	if st.Mode != syscall.S_IFREG|e.Mode&0o7777 || int(st.Uid) != e.UID || int(st.Gid) != e.GID ||
		st.Size != e.Size || st.Mtim.Nano() != e.ModTime.UnixNano() {
		return fmt.Errorf("object %s: mode, owner, size or mtime differ from the entry's: %w", obj, ErrInvalid)
	}
	return b.ow.place(b.rootfs, e.Name, e, obj)
}

// lmeta applies owner, mode and mtime to a symlink or special file, never
// following it.
func (b *Builder) lmeta(e *Entry) error {
	if err := b.rootfs.Lchown(e.Name, e.UID, e.GID); err != nil {
		return err
	}
	if e.Kind != KindSymlink {
		// Special files cannot be opened safely; the entry was just made by
		// us in a private staging directory, so the path names it.
		if err := b.rootfs.Chmod(e.Name, e.Mode&0o7777); err != nil {
			return err
		}
	}
	return b.rootfs.Lchtimes(e.Name, e.ModTime)
}

// hardlink creates e.Name as a hard link to the earlier entry e.Linkname.
// At the file system's link limit (65000 on ext4: an object many trees
// share, or an archive's own thousands of links) e becomes a copy of the
// target instead, with its content and metadata, recorded in the manifest
// as what it is (a regular file of the target's object, or a symlink); it
// starts a new link group, which later links to the same target join.
func (b *Builder) hardlink(e *Entry) (digest.Digest, error) {
	target := e.Linkname
	if g, ok := b.groups[target]; ok {
		e.Linkname = g
	}
	err := b.rootfs.Link(e.Linkname, e.Name)
	if !errors.Is(err, fsys.ErrTooManyLinks) {
		return "", err
	}
	obj, err := b.copyLinked(e)
	if err != nil {
		return "", err
	}
	if b.groups == nil {
		b.groups = map[string]string{}
	}
	b.groups[target] = e.Name
	return obj, nil
}

// copyLinked replaces hard link entry e with a copy of its target, as the
// target is in the tree: the same content, owner, mode, mtime and identity
// xattrs, so the copy names the same object.
func (b *Builder) copyLinked(e *Entry) (digest.Digest, error) {
	root, err := os.OpenRoot(filepath.Join(b.st.Dir, "rootfs"))
	if err != nil {
		return "", err
	}
	defer root.Close()
	fi, err := root.Lstat(e.Linkname)
	if err != nil {
		return "", err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return "", fmt.Errorf("stat %s: no owner", e.Linkname)
	}
	c := Entry{Name: e.Name, Mode: uint32(st.Mode) & 0o7777, UID: int(st.Uid), GID: int(st.Gid), ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec)}
	if fi.Mode()&os.ModeSymlink != 0 {
		c.Kind = KindSymlink
		if c.Linkname, err = root.Readlink(e.Linkname); err != nil {
			return "", err
		}
		if err := b.rootfs.Symlink(c.Linkname, c.Name); err != nil {
			return "", err
		}
		*e = c
		return "", b.lmeta(e)
	}
	src, err := root.Open(e.Linkname)
	if err != nil {
		return "", err
	}
	defer src.Close()
	c.Kind, c.Size = KindFile, fi.Size()
	if c.Xattrs, err = identityXattrs(src); err != nil {
		return "", err
	}
	h := objectHasher(&c)
	f, err := b.rootfs.Create(c.Name)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(io.MultiWriter(f, h), src)
	if err == nil {
		err = fsys.SetMeta(f, c.UID, c.GID, c.Mode, c.Xattrs, c.ModTime)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	*e = c
	b.stats.Bytes += c.Size
	b.stats.NewBytes += c.Size
	return hashDigest(h), nil
}

// List is a tree as BuildFromList takes it.
type List struct {
	// Entries are the tree's entries, regular files as objects the store
	// has (see AddStored), parents first and each hard link after its
	// target.
	Entries []ManifestEntry
	Refs    []string
	// Layers are the diffIDs the list was merged from, lowest first (nil
	// for none): the tree record keeps them, so that gc keeps those
	// layers while it keeps the tree.
	Layers []digest.Digest
	// NewBytes are the content bytes the import stored for the list (in
	// its layers' objects), for the tree record: linking adds none.
	NewBytes int64
	// Config and Admitted are committed with the tree record (see
	// Builder.Describe).
	Config   []byte
	Admitted string
	// Times, if not nil, is set to how long the build's steps took.
	Times *Times
}

// BuildFromList builds tree d from l and commits it as Commit does. The
// caller holds LockTree(d). On error nothing is published, no object is
// written and the staging is gone.
func (s *Store) BuildFromList(ctx context.Context, d digest.Digest, l List) (index.Tree, error) {
	b, err := s.NewBuilder(ctx)
	if err != nil {
		return index.Tree{}, err
	}
	b.layers = l.Layers
	b.stats.NewBytes = l.NewBytes
	b.Describe(l.Config, l.Admitted)
	defer b.Abort() // a no-op after Commit
	for i := range l.Entries {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return index.Tree{}, err
			}
		}
		if err := b.AddStored(l.Entries[i]); err != nil {
			return index.Tree{}, fmt.Errorf("tree %s: %w", d, err)
		}
	}
	t, err := b.Commit(ctx, d, l.Refs)
	if l.Times != nil {
		*l.Times = b.times
	}
	return t, err
}

// Commit publishes the staged tree as image digest d, in the fixed order:
// directory metadata, syncfs, rename manifest and tree into place, commit
// the index record (with what Describe gave, dropping the lease). The caller holds LockTree(d). If
// the index already has d, the staging is discarded and the existing record
// returned. Either way the Builder is finished.
func (b *Builder) Commit(ctx context.Context, d digest.Digest, refs []string) (index.Tree, error) {
	defer b.Abort()
	b.times.Write = time.Since(b.started)
	var existing index.Tree
	err := b.s.View(func(tx *index.Tx) (err error) { existing, err = tx.Tree(d); return err })
	if err == nil && !existing.Broken {
		return existing, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return index.Tree{}, err
	}
	if err := b.finishDirs(); err != nil {
		return index.Tree{}, err
	}
	if err := b.closeManifest(); err != nil {
		return index.Tree{}, fmt.Errorf("manifest: %w", err)
	}
	failpoint.Hit("cache-staged")
	if err := b.renameIn(d); err != nil {
		return index.Tree{}, err
	}
	return b.record(d, refs)
}

// closeManifest flushes and closes the staged manifest.
func (b *Builder) closeManifest() error {
	if err := b.mw.Flush(); err != nil {
		return err
	}
	if err := b.mz.Close(); err != nil {
		return err
	}
	err := b.mf.Close()
	b.mf = nil
	return err
}

// renameIn makes the staged manifest and tree durable under d's names:
// steps 1 to 3 of the publish order, each one's failpoint named after it.
func (b *Builder) renameIn(d digest.Digest) error {
	// 1. Everything staged reaches the disk before any name points at it.
	start := time.Now()
	if err := fsys.Syncfs(b.s.root); err != nil {
		return err
	}
	b.times.Sync = time.Since(start)
	failpoint.Hit("cache-synced")
	// 2. A tree directory without an index record is a leftover of a crash
	//    (or a broken tree): move it aside into our staging, which dies with us.
	dst := b.s.TreePath(d)
	if err := os.Rename(dst, filepath.Join(b.st.Dir, "old")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tree %s: %w", d, err)
	}
	// 3. Manifest, then tree, renamed into place and made durable.
	if err := os.Rename(filepath.Join(b.st.Dir, "manifest"), b.s.ManifestPath(d)); err != nil {
		return fmt.Errorf("tree %s: %w", d, err)
	}
	failpoint.Hit("cache-manifest-renamed")
	if err := os.Rename(filepath.Join(b.st.Dir, "rootfs"), dst); err != nil {
		return fmt.Errorf("tree %s: %w", d, err)
	}
	failpoint.Hit("cache-tree-renamed")
	if err := fsys.SyncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(b.s.ManifestPath(d)))
}

// record is step 4 of the publish order: the index record makes the tree
// exist, and the lease goes in the same transaction, with the config and
// admission Describe gave.
func (b *Builder) record(d digest.Digest, refs []string) (index.Tree, error) {
	failpoint.Hit("cache-before-index")
	now := time.Now().UTC()
	rec := b.stats
	rec.Digest, rec.Refs, rec.Created, rec.LastUsed = d, refs, now, now
	rec.Layers, rec.Stack = b.layers, b.stack
	rec.NewBytes += b.ow.newBytes
	rec.Manifest = hashDigest(b.mh)
	rec.Admitted = b.admit
	err := b.s.Update(func(tx *index.Tx) error {
		// A stack never names a layer directory the index lacks.
		for _, c := range rec.Stack {
			if _, err := tx.LayerDir(c); err != nil {
				return err
			}
		}
		if err := tx.PutTree(rec); err != nil {
			return err
		}
		if b.config != nil {
			if err := tx.PutConfig(d, b.config); err != nil {
				return err
			}
		}
		return tx.DeleteLease(b.st.ID)
	})
	if err != nil {
		return index.Tree{}, fmt.Errorf("tree %s: %w", d, err)
	}
	b.done = true
	b.times.Publish = time.Since(b.started) - b.times.Write - b.times.Sync
	failpoint.Hit("cache-after-index")
	return rec, nil
}

func (b *Builder) finishDirs() error {
	if !b.sawRoot {
		// As tar -x into a fresh directory would leave it.
		b.dirs = append([]Entry{{Name: ".", Kind: KindDir, Mode: 0o755, ModTime: b.started}}, b.dirs...)
	}
	for i := len(b.dirs) - 1; i >= 0; i-- {
		e := &b.dirs[i]
		f, err := b.rootfs.OpenDirFile(e.Name)
		if err != nil {
			return fmt.Errorf("entry %q: %w", e.Name, err)
		}
		err = fsys.SetMeta(f, e.UID, e.GID, e.Mode, e.Xattrs, e.ModTime)
		f.Close()
		if err != nil {
			return fmt.Errorf("entry %q: %w", e.Name, err)
		}
	}
	return nil
}

// Abort discards the staging and drops the lease. It is safe to call
// after Commit and more than once.
func (b *Builder) Abort() {
	if b.st == nil {
		return
	}
	if b.mf != nil {
		b.mf.Close()
		b.mf = nil
	}
	if b.rootfs != nil {
		b.rootfs.Close()
		b.rootfs = nil
	}
	b.ow.close()
	b.ow = nil
	// Best effort: a lease left behind expires, and the next command
	// removes staging whose lock is free.
	if !b.done {
		b.s.Update(func(tx *index.Tx) error { return tx.DeleteLease(b.st.ID) })
	}
	b.st.Remove()
	b.st = nil
	if b.lock != nil {
		b.lock.Unlock()
	}
}
