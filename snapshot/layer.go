package snapshot

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
)

// The whiteout spellings of the OCI image spec (and Docker's layers).
const (
	whPrefix     = ".wh."
	opaqueMarker = ".wh..wh..opq"
)

// Entry is one entry of a layer or of a merged tree: a validated tree
// entry and, for a regular file, the object holding its content. It is
// the store's manifest entry, which is what a layer's record lists.
type Entry = cache.ManifestEntry

// Whiteout is a layer's instruction to hide what lower layers hold. Name
// is what is removed, with its subtree (from NAME/.wh.BASE: the clean
// name NAME/BASE), or for an opaque marker (NAME/.wh..wh..opq) the
// directory whose lower children are hidden.
type Whiteout = cache.Whiteout

// Diff is one layer's content as data: what ReadDiff validated from its
// tar stream, before any lower layer is looked at.
type Diff struct {
	ID        digest.Digest // the layer's diffID, named in messages; may be empty
	Entries   []Entry       // in archive order; a hard link's target may be in a lower layer
	Whiteouts []Whiteout    // in archive order; never entries
}

// PutFunc stores a regular file's content, read from r to EOF, as the
// object for e and returns its digest. Its error names the entry.
type PutFunc func(e cache.Entry, r io.Reader) (digest.Digest, error)

// ReadDiff validates the layer tar stream r and returns its content, each
// regular file's content stored through put. Every entry passes the checks
// readFlat makes of a flattened export (see the package doc), except those
// that need the lower layers, which Merge makes: an entry's parents may
// come from a lower layer (none are invented), and so may a hard link's
// target. Whiteouts become Whiteouts; one is refused when it is not an
// empty regular file, is a bare ".wh.", whites out "." or "..", is aufs
// metadata (".wh..wh.*" other than the opaque marker), or shares its name
// with an entry or another whiteout of the layer. On error the objects put
// so far are the caller's to forget.
func ReadDiff(ctx context.Context, r io.Reader, put PutFunc) (Diff, error) {
	return readDiff(ctx, r, put, nil)
}

// readDiff is ReadDiff telling progress, which may be nil, how it goes.
func readDiff(ctx context.Context, r io.Reader, put PutFunc, progress Progress) (Diff, error) {
	return readLayer(ctx, r, put, progress, false)
}

// readFlat reads a flattened export (`docker export`, `import --tar`) as
// the one layer of a stack: ReadDiff's checks, and those only a whole
// rootfs allows: a whiteout is refused (there is nothing below it to
// hide), a hard link's target must be an earlier entry, and a missing
// parent is made as tar makes it (mode 0755, root-owned, the entry's
// mtime).
func readFlat(ctx context.Context, r io.Reader, put PutFunc, progress Progress) (Diff, error) {
	return readLayer(ctx, r, put, progress, true)
}

func readLayer(ctx context.Context, r io.Reader, put PutFunc, progress Progress, flat bool) (Diff, error) {
	x := &diffReader{put: put, flat: flat, seen: map[string]cache.Kind{}, white: map[string]bool{}, opaque: map[string]bool{}}
	if err := readArchive(ctx, r, x, progress); err != nil {
		return Diff{}, err
	}
	return x.d, nil
}

// diffReader validates a layer entry by entry.
type diffReader struct {
	put    PutFunc
	flat   bool // a flattened export: see readFlat
	d      Diff
	seen   map[string]cache.Kind // the layer's entries; a hard link is KindHardlink unless its target is here
	white  map[string]bool       // names the layer's whiteouts remove
	opaque map[string]bool       // directories the layer's opaque markers hide
}

// add validates one entry of the layer's archive and appends it to the
// Diff as an Entry or a Whiteout, storing a regular file's content r
// through put. An error refuses the layer.
func (x *diffReader) add(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, kind, err := nameAndKind(hdr)
	if err != nil {
		return err
	}
	if x.flat && strings.HasPrefix(path.Base(name), whPrefix) {
		return unsafe(hdr.Name, "whiteout in a flattened export")
	}
	if err := checkHeader(hdr, name, kind); err != nil {
		return err
	}
	if strings.HasPrefix(path.Base(name), whPrefix) {
		return x.whiteout(hdr, name, kind)
	}
	if _, dup := x.seen[name]; dup {
		if name == "." {
			return nil // "./" and "/" both name the root; tar lists it at most once in practice
		}
		return unsafe(hdr.Name, "duplicate entry")
	}
	if x.white[name] {
		return unsafe(hdr.Name, "entry and whiteout of the same name in one layer")
	}
	if err := x.parent(hdr, name); err != nil {
		return err
	}
	e, err := newEntry(hdr, name, kind)
	if err != nil {
		return err
	}
	seen := kind
	switch kind {
	case cache.KindSymlink:
		if err := checkSymlink(hdr); err != nil {
			return err
		}
		e.Linkname = hdr.Linkname
	case cache.KindHardlink:
		if e.Linkname, seen, err = x.hardlink(hdr, name); err != nil {
			return err
		}
	}
	out := Entry{Entry: e}
	if kind == cache.KindFile {
		if out.Object, err = x.put(e, r); err != nil {
			return err // put's error names the entry
		}
	}
	x.seen[name] = seen
	x.d.Entries = append(x.d.Entries, out)
	return nil
}

// hardlink checks the hard link hdr, named name, and returns its clean
// target and the kind to remember name as: the target's kind when the
// target is a file or symlink of this layer, else KindHardlink (a lower
// layer's name, or a link to one, which Merge resolves). A link to
// itself, or to anything of this layer that is not a file or symlink, is
// refused.
func (x *diffReader) hardlink(hdr *tar.Header, name string) (string, cache.Kind, error) {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return "", 0, fmt.Errorf("entry %q: hard link target: %w", hdr.Name, err)
	}
	switch k := x.seen[target]; {
	case target == name:
		return "", 0, unsafe(hdr.Name, "hard link to itself")
	case k == cache.KindFile || k == cache.KindSymlink:
		return target, k, nil
	case x.flat && k == 0:
		return "", 0, unsafe(hdr.Name, fmt.Sprintf("hard link to %q, which is not an earlier entry", hdr.Linkname))
	case k == 0, k == cache.KindHardlink:
		return target, cache.KindHardlink, nil
	default:
		return "", 0, unsafe(hdr.Name, fmt.Sprintf("hard link to %q, which is not a regular file or symlink", hdr.Linkname))
	}
}

// parent refuses an entry under a non-directory of the same layer. A
// parent the layer does not hold must be a directory once the lower
// layers are merged, which Merge checks.
func (x *diffReader) parent(hdr *tar.Header, name string) error {
	if name == "." {
		return nil
	}
	dir := path.Dir(name)
	if k, ok := x.seen[dir]; ok && k != cache.KindDir {
		return unsafe(hdr.Name, fmt.Sprintf("parent %q is not a directory", dir))
	}
	if _, ok := x.seen[dir]; !ok && x.flat && dir != "." {
		if err := x.parent(hdr, dir); err != nil {
			return err
		}
		x.seen[dir] = cache.KindDir
		x.d.Entries = append(x.d.Entries, Entry{Entry: cache.Entry{Name: dir, Kind: cache.KindDir, Mode: 0o755, ModTime: hdr.ModTime}})
	}
	return nil
}

// whiteout records the whiteout entry hdr, named name.
func (x *diffReader) whiteout(hdr *tar.Header, name string, kind cache.Kind) error {
	dir, base := path.Split(name)
	dir = path.Clean(dir) // "" for a top-level name becomes "."
	rest := strings.TrimPrefix(base, whPrefix)
	switch {
	case kind != cache.KindFile || hdr.Size != 0:
		// Docker and the OCI spec write empty regular files; anything else
		// (a directory with content, a hard link) has no defined meaning.
		return unsafe(hdr.Name, "whiteout that is not an empty regular file")
	case len(xattrKeys(hdr)) > 0:
		return unsafe(hdr.Name, "whiteout with xattrs")
	case base == opaqueMarker:
		if x.opaque[dir] {
			return unsafe(hdr.Name, "duplicate opaque marker")
		}
		if err := x.parent(hdr, name); err != nil {
			return err
		}
		x.opaque[dir] = true
		x.d.Whiteouts = append(x.d.Whiteouts, Whiteout{Name: dir, Opaque: true})
		return nil
	case rest == "":
		return unsafe(hdr.Name, "bare whiteout")
	case strings.HasPrefix(rest, whPrefix):
		return unsafe(hdr.Name, "unsupported aufs whiteout metadata")
	case rest == "." || rest == "..":
		return unsafe(hdr.Name, "whiteout of a directory itself or its parent")
	}
	target := path.Join(dir, rest)
	switch {
	case x.white[target]:
		return unsafe(hdr.Name, "duplicate whiteout")
	case x.seen[target] != 0:
		return unsafe(hdr.Name, "entry and whiteout of the same name in one layer")
	}
	if err := x.parent(hdr, name); err != nil {
		return err
	}
	x.white[target] = true
	x.d.Whiteouts = append(x.d.Whiteouts, Whiteout{Name: target})
	return nil
}

// xattrKeys lists the SCHILY.xattr records of hdr.
func xattrKeys(hdr *tar.Header) []string {
	var ks []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			ks = append(ks, k)
		}
	}
	return ks
}

// CheckLayerCount refuses an image whose manifest lists a number of
// layers other than its config's diffIDs: pairing them up would verify
// one layer against another's digest, or leave one unverified.
func CheckLayerCount(manifestLayers, diffIDs int) error {
	if manifestLayers != diffIDs {
		return fmt.Errorf("image manifest lists %d layers but its config %d diffIDs", manifestLayers, diffIDs)
	}
	return nil
}
