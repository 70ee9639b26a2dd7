package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/failpoint"
)

// Limits on names in an archive. Linux allows 4096 bytes per path and 255
// per component; the depth bound keeps a pathological archive cheap.
const (
	maxName      = 4096
	maxComponent = 255
	maxDepth     = 256
	maxOwner     = 1<<32 - 2 // (uid_t)-1 means "unchanged" to chown
	maxMajor     = 1<<12 - 1 // what mknod's 32-bit dev_t holds
	maxMinor     = 1<<20 - 1
)

// The mtimes whose nanoseconds since the epoch fit in an int64.
var minTime, maxTime = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

// ErrUnsafeEntry wraps every refusal of an archive entry by the checks
// here (cache.ErrUnsafe is the store refusing a path that would leave a
// tree, the backstop below them).
var ErrUnsafeEntry = errors.New("unsafe archive entry")

// Progress is told how an import advances. Both methods must be quick.
type Progress interface {
	// Update is told the bytes read and entries added so far, after
	// every entry.
	Update(bytes, entries int64)
	// Done is called once when the stream ends, whatever its result. An
	// import that finds the tree in the store calls neither.
	Done()
}

// adder takes one archive entry: its header and its content.
type adder interface {
	add(hdr *tar.Header, r io.Reader) error
}

// readArchive feeds every entry of the tar stream r to x, and refuses a
// stream that is truncated or ends without its end-of-archive marker.
func readArchive(ctx context.Context, r io.Reader, x adder, progress Progress) error {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	var entries int64
	where := "read archive"
	var end int64 // where the entry read last ends, padding included
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF && cr.n == end {
			// archive/tar also reports a stream that stops between two
			// entries as EOF; only a zero block after the last entry
			// shows that the writer finished. A dropped `docker export`
			// must not become a complete tree.
			err = fmt.Errorf("stream ends without an end-of-archive marker: %w", io.ErrUnexpectedEOF)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		end = (cr.n + dataSize(hdr) + 511) &^ 511
		if err := x.add(hdr, tr); err != nil {
			return err
		}
		where = fmt.Sprintf("read archive after entry %q", hdr.Name)
		entries++
		if entries == 16 {
			failpoint.Hit("snapshot-mid-extract") // objects and a lease written, nothing published
		}
		if progress != nil {
			progress.Update(cr.n, entries)
		}
	}
	// Read to the end: a tar key covers the trailing blocks too.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return fmt.Errorf("read archive: %w", err)
	}
	return nil
}

// dataSize is how many bytes of the stream follow hdr's header block(s),
// padding excluded. archive/tar ignores the size of the types that have no
// content, and has consumed a global header's records already.
func dataSize(hdr *tar.Header) int64 {
	switch hdr.Typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo, tar.TypeXGlobalHeader:
		return 0
	}
	return hdr.Size
}

func unsafe(name, why string) error {
	return fmt.Errorf("entry %q: %s: %w", name, why, ErrUnsafeEntry)
}

// cleanName maps an archive name to a clean relative name, "." for the
// root. It refuses rather than repairs anything that is not plainly a path
// inside the tree.
func cleanName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", unsafe(raw, "empty name")
	case strings.IndexByte(raw, 0) >= 0:
		return "", unsafe(raw, "NUL in name")
	case len(raw) > maxName:
		return "", unsafe(raw[:64]+"…", "name longer than 4096 bytes")
	}
	n := strings.TrimLeft(raw, "/") // as tar: "Removing leading '/' from member names"
	if n == "" {
		return ".", nil
	}
	parts := strings.Split(n, "/")
	if len(parts) > maxDepth {
		return "", unsafe(raw, "deeper than 256 levels")
	}
	for _, p := range parts {
		if p == ".." {
			return "", unsafe(raw, "path escapes the tree")
		}
		if len(p) > maxComponent {
			return "", unsafe(raw, "component longer than 255 bytes")
		}
	}
	return path.Clean(n), nil
}

var kinds = map[byte]cache.Kind{
	tar.TypeReg: cache.KindFile, tar.TypeRegA: cache.KindFile, tar.TypeGNUSparse: cache.KindFile,
	tar.TypeDir: cache.KindDir, tar.TypeSymlink: cache.KindSymlink, tar.TypeLink: cache.KindHardlink,
	tar.TypeChar: cache.KindChar, tar.TypeBlock: cache.KindBlock, tar.TypeFifo: cache.KindFIFO,
}

// nameAndKind returns hdr's clean name and the kind of entry it makes.
func nameAndKind(hdr *tar.Header) (string, cache.Kind, error) {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return "", 0, err
	}
	kind, ok := kinds[hdr.Typeflag]
	if !ok {
		return "", 0, unsafe(hdr.Name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
	}
	if kind == cache.KindFile && hdr.Typeflag == tar.TypeRegA && strings.HasSuffix(hdr.Name, "/") {
		kind = cache.KindDir // old tars mark directories this way
	}
	return name, kind, nil
}

// checkHeader refuses what hdr says about itself, whatever came before.
// Whiteouts are the caller's business.
func checkHeader(hdr *tar.Header, name string, kind cache.Kind) error {
	device := kind == cache.KindChar || kind == cache.KindBlock
	switch {
	case name == "." && kind != cache.KindDir:
		return unsafe(hdr.Name, "root entry is not a directory")
	case hdr.Uid < 0 || hdr.Uid > maxOwner || hdr.Gid < 0 || hdr.Gid > maxOwner:
		return unsafe(hdr.Name, fmt.Sprintf("owner %d:%d out of range", hdr.Uid, hdr.Gid))
	case device && !strings.HasPrefix(name, "dev/"):
		return unsafe(hdr.Name, "device node outside dev/")
	case device && (hdr.Devmajor < 0 || hdr.Devmajor > maxMajor || hdr.Devminor < 0 || hdr.Devminor > maxMinor):
		// mknod(2) silently drops the bits that do not fit.
		return unsafe(hdr.Name, fmt.Sprintf("device number %d:%d out of range", hdr.Devmajor, hdr.Devminor))
	case kind == cache.KindChar && hdr.Devmajor == 0 && hdr.Devminor == 0:
		// Overlayfs reads a 0:0 character device in a layer directory as
		// a whiteout: a stack would hide the name instead of showing it.
		return unsafe(hdr.Name, "character device 0:0, which overlayfs takes for a whiteout")
	case kind == cache.KindFile && hdr.Size < 0:
		return unsafe(hdr.Name, "negative size")
	case sparse(hdr):
		// Its holes would be written out in full: a few bytes of archive
		// could fill the disk. Docker never exports sparse entries.
		return unsafe(hdr.Name, "sparse file")
	case hdr.ModTime.Before(minTime) || hdr.ModTime.After(maxTime):
		// The manifest and object names record nanoseconds in an int64.
		return unsafe(hdr.Name, fmt.Sprintf("mtime %d out of range", hdr.ModTime.Unix()))
	}
	return nil
}

// newEntry is hdr as the builder takes it, its link target still unset.
func newEntry(hdr *tar.Header, name string, kind cache.Kind) (cache.Entry, error) {
	e := cache.Entry{
		Name: name, Kind: kind, Mode: uint32(hdr.Mode) & 0o7777,
		UID: hdr.Uid, GID: hdr.Gid, ModTime: hdr.ModTime,
		Devmajor: uint32(hdr.Devmajor), Devminor: uint32(hdr.Devminor),
	}
	if kind == cache.KindFile {
		e.Size = hdr.Size
	}
	var err error
	if e.Xattrs, err = xattrs(hdr); err != nil {
		return e, err
	}
	if _, ok := e.Xattrs["security.capability"]; ok && kind != cache.KindFile && kind != cache.KindHardlink {
		return e, unsafe(hdr.Name, "file capability on a non-regular file")
	}
	return e, nil
}

// checkSymlink refuses a symlink target no file system can hold.
func checkSymlink(hdr *tar.Header) error {
	if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 || len(hdr.Linkname) > maxName {
		return unsafe(hdr.Name, "bad symlink target")
	}
	return nil
}

// xattrs applies the xattr policy described in the package doc.
func xattrs(hdr *tar.Header) (map[string][]byte, error) {
	var out map[string][]byte
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		switch {
		case name == "security.capability" || strings.HasPrefix(name, "user."):
			if !utf8.ValidString(name) || len(name) > 255 || len(v) > 64<<10 {
				return nil, unsafe(hdr.Name, fmt.Sprintf("bad xattr %q", name))
			}
			if out == nil {
				out = map[string][]byte{}
			}
			if name == "security.capability" {
				v = kernelCap(v)
			}
			out[name] = []byte(v)
		case name == "security.selinux" || strings.HasPrefix(name, "system."):
			// dropped: see the package doc
		case strings.HasPrefix(name, "trusted."):
			return nil, unsafe(hdr.Name, fmt.Sprintf("xattr %q is reserved for the host", name))
		default:
			return nil, unsafe(hdr.Name, fmt.Sprintf("unsupported xattr %q", name))
		}
	}
	return out, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// kernelCap returns a file capability as the kernel stores it. Set by a
// process in the initial user namespace, a revision 3 capability whose
// root uid is 0 is kept as revision 2; the object's name must describe
// what is on disk.
func kernelCap(v string) string {
	if len(v) != 24 || v[3] != 3 || v[20:] != "\x00\x00\x00\x00" {
		return v
	}
	return v[:3] + "\x02" + v[4:20] // magic_etc is little-endian: the revision is its top byte
}

// sparse reports a sparse entry in the old GNU or the PAX format.
func sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
