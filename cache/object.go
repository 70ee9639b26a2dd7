package cache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/fsys"
)

// smallFile is the size up to which a file is hashed in memory before
// anything is written, so content the store already has costs one link
// (or one stat). Larger files are written while they are hashed.
const smallFile = 4 << 20

// objectWriter stores regular files as objects: the one writer behind a
// Builder's files and a LayerWriter's. A new file is written under a name
// in a directory (the tree being built, or a writer's staging) while it is
// hashed, then hard-linked into objects/ under its digest. Names in
// objects/ are looked up relative to an open descriptor of objects/sha256,
// not walked from / each time. One objectWriter is used by one goroutine.
type objectWriter struct {
	s        *Store
	objects  *fsys.Dir // objects/sha256
	buf      []byte    // a small file's content, at most smallFile
	newBytes int64     // content bytes of objects this writer added
}

func (s *Store) newObjectWriter() (*objectWriter, error) {
	objects, err := fsys.OpenDir(filepath.Join(s.root, "objects", "sha256"))
	if err != nil {
		return nil, err
	}
	return &objectWriter{s: s, objects: objects}, nil
}

// close releases w's descriptor; it is safe on a nil w.
func (w *objectWriter) close() {
	if w != nil && w.objects != nil {
		w.objects.Close()
		w.objects = nil
	}
}

// put stores regular file e, exactly e.Size bytes read from r (fewer is
// an error, more are left unread), as its object (named by objectHasher
// and the content) and returns the object's digest. The file is written
// as name in dir. With keep, name stays in dir as the object: a hard link
// of it, or a copy at the file system's link limit; an empty file is
// created there and stored as nothing (linking thousands of empty files to
// one inode gains nothing and shares inode state, such as locks, that
// should not be shared). Without keep, name is gone when put returns and
// an empty file is not written at all: its digest names it. Content the
// store has costs no write when it is at most smallFile; two writers
// storing one object at once both succeed with the same file.
func (w *objectWriter) put(dir *fsys.Dir, name string, e *Entry, r io.Reader, keep bool) (digest.Digest, error) {
	h := objectHasher(e)
	if e.Size == 0 {
		if keep {
			return hashDigest(h), copyInto(dir, name, e, nil)
		}
		return hashDigest(h), nil
	}
	if e.Size > smallFile {
		f, err := dir.Create(name)
		if err != nil {
			return "", err
		}
		n, err := io.CopyN(io.MultiWriter(f, h), r, e.Size)
		if err == io.EOF {
			err = fmt.Errorf("read %d of %d bytes: %w", n, e.Size, io.ErrUnexpectedEOF)
		}
		obj := hashDigest(h)
		return obj, w.publish(dir, name, e, f, obj, err, keep)
	}
	if cap(w.buf) < int(e.Size) {
		// Doubling saves a reallocation per slightly larger file; the cap
		// keeps each of the writers a pull runs at once to smallFile.
		w.buf = make([]byte, min(max(int(e.Size), 2*cap(w.buf), 64<<10), smallFile))
	}
	data := w.buf[:e.Size]
	if _, err := io.ReadFull(r, data); err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	h.Write(data)
	obj := hashDigest(h)
	if keep {
		switch err := w.place(dir, name, e, obj); {
		case err == nil:
			return obj, nil
		case !errors.Is(err, os.ErrNotExist):
			return "", err
		}
	} else if _, err := w.objects.Lstat(obj.Encoded()); err == nil {
		return obj, nil
	}
	f, err := dir.Create(name)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	return obj, w.publish(dir, name, e, f, obj, err, keep)
}

// publish finishes f, the new file name in dir with e's content (err: how
// writing it went), and links it into objects/ as obj. An object another
// writer linked first is as good: with keep, name becomes that one
// (identical by construction). Without keep, name goes either way, so the
// object's link count says how many trees and layers link it, as gc
// expects.
func (w *objectWriter) publish(dir *fsys.Dir, name string, e *Entry, f *os.File, obj digest.Digest, err error, keep bool) error {
	if err == nil {
		err = fsys.SetMeta(f, e.UID, e.GID, e.Mode, e.Xattrs, e.ModTime)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if !keep {
			dir.Remove(name)
		}
		return err
	}
	lerr := fsys.Linkat(dir, name, w.objects, obj.Encoded())
	switch {
	case lerr == nil:
		w.newBytes += e.Size
		if keep {
			return nil
		}
	case !errors.Is(lerr, os.ErrExist):
		if !keep {
			dir.Remove(name)
		}
		return lerr
	}
	if err := dir.Remove(name); err != nil || !keep {
		return err
	}
	return w.place(dir, name, e, obj)
}

// place hard-links object obj into dir as name; the error wraps
// os.ErrNotExist if the store has no such object. An object at the file
// system's link limit (65000 on ext4) is copied instead, with its own
// xattrs, whatever e carries.
func (w *objectWriter) place(dir *fsys.Dir, name string, e *Entry, obj digest.Digest) error {
	err := fsys.Linkat(w.objects, obj.Encoded(), dir, name)
	if !errors.Is(err, fsys.ErrTooManyLinks) {
		return err
	}
	src, err := os.Open(w.s.ObjectPath(obj))
	if err != nil {
		return err
	}
	defer src.Close()
	c := *e
	if c.Xattrs, err = identityXattrs(src); err != nil {
		return err
	}
	w.newBytes += e.Size
	return copyInto(dir, name, &c, src)
}

// identityXattrs returns f's xattrs that are part of an object's identity.
func identityXattrs(f *os.File) (map[string][]byte, error) {
	x, err := fsys.Xattrs(f)
	for k := range x {
		if !IdentityXattr(k) {
			delete(x, k)
		}
	}
	return x, err
}

// copyInto creates name in dir as a fresh file with src's content (none
// for a nil src) and e's metadata.
func copyInto(dir *fsys.Dir, name string, e *Entry, src *os.File) error {
	f, err := dir.Create(name)
	if err != nil {
		return err
	}
	if src != nil {
		_, err = io.Copy(f, src)
	}
	if err == nil {
		err = fsys.SetMeta(f, e.UID, e.GID, e.Mode, e.Xattrs, e.ModTime)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkEntry is the one check of what an entry says about itself, made
// whichever way it reaches the store (Builder.Add, Builder.AddStored,
// LayerWriter.Put and Commit): a kind the store knows, a size that is not
// negative, no 0:0 character device (an overlayfs whiteout), no xattr an
// import never keeps.
func checkEntry(e *Entry) error {
	switch e.Kind {
	case KindDir, KindFile, KindSymlink, KindHardlink, KindChar, KindBlock, KindFIFO:
	default:
		return fmt.Errorf("kind %q: %w", e.Kind, ErrInvalid)
	}
	if e.Size < 0 {
		return fmt.Errorf("size %d: %w", e.Size, ErrInvalid)
	}
	if e.Kind == KindChar && e.Devmajor == 0 && e.Devminor == 0 {
		// What overlayfs takes for a whiteout: only the store writes those.
		return fmt.Errorf("character device 0:0: %w", ErrInvalid)
	}
	for k := range e.Xattrs {
		if !IdentityXattr(k) {
			return fmt.Errorf("xattr %q: %w", k, ErrInvalid)
		}
	}
	return nil
}
