package registry

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Bounds on an image archive (docker-archive:, oci-archive:), which is
// hostile input like a registry's answers.
const (
	// maxArchiveEntries bounds the entries indexed: an image archive
	// holds a few per layer, a layer's files being inside its blob.
	maxArchiveEntries = 1 << 16
	// maxArchiveLinks bounds the links followed to reach one file.
	maxArchiveLinks = 16
	// maxExpansion bounds a compressed archive's decompressed copy, as
	// a multiple of the compressed file's size (plus expansionSlack):
	// layers inside are compressed already, so an archive of them
	// barely shrinks, and a compression bomb must not fill the disk.
	maxExpansion = 64
)

// expansionSlack is what a compressed archive may decompress to beyond
// maxExpansion times its size (a variable for tests).
var expansionSlack int64 = 64 << 20

// tarFile is an image archive opened for reading files by name: one pass
// over its headers records where each regular file's content lies, and
// each open reads that content in place. Nothing is ever written from
// the archive's names, so no name can escape anywhere; links are
// followed within the archive's own namespace. A gzip- or
// zstd-compressed archive is first decompressed into an unlinked
// temporary file (gone on close, and after a crash), bounded by
// maxExpansion. It is safe for concurrent use.
type tarFile struct {
	name    string   // the archive's path, for messages
	f       *os.File // the tar itself, or its decompressed copy
	entries map[string]tarEntry
}

type tarEntry struct {
	typ       byte
	off, size int64
	link      string // cleaned, archive-relative, for links
}

// openTar indexes the archive at file; tmpDir ("" for os.TempDir) takes
// the decompressed copy of a compressed one. The caller closes it.
// Decompressing stops when ctx ends.
func openTar(ctx context.Context, file, tmpDir string) (*tarFile, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	t := &tarFile{name: file, f: f, entries: map[string]tarEntry{}}
	if err := t.decompress(ctx, tmpDir); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.index(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Close releases the archive (and removes a decompressed copy).
func (t *tarFile) Close() error { return t.f.Close() }

// decompress replaces t.f by a decompressed copy if the archive starts
// with gzip's or zstd's magic number.
func (t *tarFile) decompress(ctx context.Context, tmpDir string) error {
	br := bufio.NewReader(t.f)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	var dec io.Reader
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer z.Close()
		dec = z
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		defer z.Close()
		dec = z
	default:
		_, err := t.f.Seek(0, io.SeekStart)
		return err
	}
	fi, err := t.f.Stat()
	if err != nil {
		return err
	}
	limit := fi.Size()*maxExpansion + expansionSlack
	tmp, err := os.CreateTemp(tmpDir, "rootswap-archive-*")
	if err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	// Unlinked at once: the open file is the only name it needs, and
	// nothing is left behind whatever happens next.
	os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(ctxReader{ctx, dec}, limit+1))
	switch {
	case err != nil:
		tmp.Close()
		return fmt.Errorf("decompressing: %w", err)
	case n > limit:
		tmp.Close()
		return fmt.Errorf("decompresses to more than %d bytes (%d times its size): refused as a compression bomb; decompress it yourself if you trust it", limit, maxExpansion)
	}
	t.f.Close()
	t.f = tmp
	_, err = tmp.Seek(0, io.SeekStart)
	return err
}

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}

// index reads every header once. tar.Reader reads t.f without buffering
// ahead and skips content by seeking, so after Next the file's offset is
// where the entry's content starts.
func (t *tarFile) index() error {
	tr := tar.NewReader(t.f)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		if n == maxArchiveEntries {
			return fmt.Errorf("more than %d entries: not an image archive", maxArchiveEntries)
		}
		off, err := t.f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		name := cleanName(h.Name)
		e := tarEntry{typ: h.Typeflag, off: off, size: h.Size}
		switch h.Typeflag {
		case tar.TypeReg:
			for k := range h.PAXRecords {
				if strings.HasPrefix(k, "GNU.sparse.") {
					// Its content is not stored in place: unreadable here,
					// and no image tool writes one.
					e.typ = tar.TypeGNUSparse
				}
			}
		case tar.TypeSymlink:
			e.link = cleanName(path.Join(path.Dir(name), h.Linkname))
		case tar.TypeLink:
			e.link = cleanName(h.Linkname)
		}
		if _, dup := t.entries[name]; !dup {
			// The first entry of a name wins, as for go-containerregistry's
			// tarball reader and docker load, which stop at the first.
			t.entries[name] = e
		}
	}
}

// cleanName is an archive name as lookups spell it: relative, cleaned,
// with no way above the archive's top ("../x" is "x").
func cleanName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// Open returns the content of the regular file name (links followed)
// and its size. The reader is the caller's to close.
func (t *tarFile) Open(name string) (io.ReadCloser, int64, error) {
	e, err := t.lookup(name)
	if err != nil {
		return nil, 0, err
	}
	return io.NopCloser(io.NewSectionReader(t.f, e.off, e.size)), e.size, nil
}

// Size is the size of the regular file name (links followed).
func (t *tarFile) Size(name string) (int64, error) {
	e, err := t.lookup(name)
	return e.size, err
}

// ReadFile returns the content of the regular file name, which must not
// be longer than limit bytes.
func (t *tarFile) ReadFile(name string, limit int64) ([]byte, error) {
	e, err := t.lookup(name)
	if err != nil {
		return nil, err
	}
	if e.size > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d it may have", name, e.size, limit)
	}
	b := make([]byte, e.size)
	if _, err := t.f.ReadAt(b, e.off); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

func (t *tarFile) lookup(name string) (tarEntry, error) {
	name = cleanName(name)
	for range maxArchiveLinks {
		e, ok := t.entries[name]
		switch {
		case !ok:
			return tarEntry{}, fmt.Errorf("%s: %w in the archive", name, fs.ErrNotExist)
		case e.typ == tar.TypeReg:
			return e, nil
		case e.typ != tar.TypeSymlink && e.typ != tar.TypeLink:
			return tarEntry{}, fmt.Errorf("%s: not a regular file in the archive", name)
		}
		name = e.link
	}
	return tarEntry{}, fmt.Errorf("%s: more than %d links to follow in the archive", name, maxArchiveLinks)
}

// tarCache keeps the archives a source opened, so that Layers' streams
// read what Resolve indexed (a compressed archive is decompressed once),
// until the source is closed. An archive whose file changed since is
// opened again.
type tarCache struct {
	tmpDir string
	mu     sync.Mutex
	m      map[string]*cachedTar
}

type cachedTar struct {
	t    *tarFile
	stat os.FileInfo
}

// open returns the indexed archive at file; the cache closes it.
func (c *tarCache) open(ctx context.Context, file string) (*tarFile, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[file]; ok && os.SameFile(e.stat, fi) && e.stat.ModTime().Equal(fi.ModTime()) && e.stat.Size() == fi.Size() {
		return e.t, nil
	}
	t, err := openTar(ctx, file, c.tmpDir)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*cachedTar{}
	}
	if old, ok := c.m[file]; ok {
		// Streams of the old one may still read it: kept open until
		// Close, as the source's contract says.
		c.m[file+"\x00"+old.stat.ModTime().String()] = old
	}
	c.m[file] = &cachedTar{t, fi}
	return t, nil
}

// Close closes every archive opened.
func (c *tarCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for k, e := range c.m {
		errs = append(errs, e.t.Close())
		delete(c.m, k)
	}
	return errors.Join(errs...)
}
