package cache

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Kind is the type of a tree entry.
type Kind byte

// The kinds of entry a tree holds. A hard link names an earlier entry.
const (
	KindDir      Kind = 'd'
	KindFile     Kind = 'f'
	KindSymlink  Kind = 'l'
	KindHardlink Kind = 'h'
	KindChar     Kind = 'c'
	KindBlock    Kind = 'b'
	KindFIFO     Kind = 'p'
)

// Entry is one validated entry of a tree, as the snapshot package hands it
// over: Name is clean, relative and slash-separated ("." is the tree root),
// Linkname of a hard link is clean and names an earlier entry.
type Entry struct {
	Name     string
	Kind     Kind
	Mode     uint32 // permission bits with setuid, setgid and sticky
	UID, GID int
	ModTime  time.Time
	Xattrs   map[string][]byte
	Linkname string // symlink target or hard link target
	Devmajor uint32
	Devminor uint32
	Size     int64 // content length of a regular file
}

// objectHasher starts the digest of a regular file's object: a canonical
// header of everything tar records about the file, then (written by the
// caller) its content.
func objectHasher(e *Entry) hash.Hash {
	h := sha256.New()
	var b strings.Builder
	fmt.Fprintf(&b, "rootswap-object-v1\ntype %c\nmode %o\nuid %d\ngid %d\nmtime %d\n",
		KindFile, e.Mode&0o7777, e.UID, e.GID, e.ModTime.UnixNano())
	keys := make([]string, 0, len(e.Xattrs))
	for k := range e.Xattrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "xattr %q %x\n", k, e.Xattrs[k])
	}
	b.WriteString("\n")
	io.WriteString(h, b.String())
	return h
}

func hashDigest(h hash.Hash) digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
}

// manifestLine encodes one entry of a tree manifest:
//
//	kind mode uid gid mtime-ns object size "name" "link"
//
// object is "-" for anything but a regular file; link is the symlink or
// hard link target, or "major:minor" of a device.
func manifestLine(e *Entry, obj digest.Digest) string {
	o := "-"
	if obj != "" {
		o = obj.String()
	}
	link := e.Linkname
	if e.Kind == KindChar || e.Kind == KindBlock {
		link = fmt.Sprintf("%d:%d", e.Devmajor, e.Devminor)
	}
	return fmt.Sprintf("%c %o %d %d %d %s %d %s %s\n", e.Kind, e.Mode&0o7777, e.UID, e.GID,
		e.ModTime.UnixNano(), o, e.Size, strconv.Quote(e.Name), strconv.Quote(link))
}

// OpenManifest opens the manifest of tree d for reading its lines
// (manifestLine); the index's Tree.Manifest is the sha256 of what it reads.
// On disk it is gzip-compressed; a plain one, as early versions wrote, is
// read as it is.
func (s *Store) OpenManifest(d digest.Digest) (io.ReadCloser, error) {
	f, err := os.Open(s.ManifestPath(d))
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); string(magic) == "\x1f\x8b" {
		if r, err = gzip.NewReader(br); err != nil {
			f.Close()
			return nil, fmt.Errorf("manifest %s: %w", d, err)
		}
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

// ManifestEntry is one parsed manifest line.
type ManifestEntry struct {
	Entry
	Object digest.Digest // regular files only
}

// ParseManifestLine decodes a line written by manifestLine.
func ParseManifestLine(line string) (ManifestEntry, error) {
	var me ManifestEntry
	var kind byte
	var mode uint32
	var mtime int64
	var obj string
	rest := line
	n, err := fmt.Sscanf(line, "%c %o %d %d %d %s %d", &kind, &mode, &me.UID, &me.GID, &mtime, &obj, &me.Size)
	if err != nil || n != 7 {
		return me, fmt.Errorf("manifest line %q: %w", line, ErrInvalid)
	}
	// Skip the seven fields just scanned, then unquote the two strings.
	for i := 0; i < 7; i++ {
		_, rest, _ = strings.Cut(rest, " ")
	}
	name, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return me, fmt.Errorf("manifest line %q: %w", line, ErrInvalid)
	}
	link := strings.TrimPrefix(rest[len(name):], " ")
	link = strings.TrimSuffix(link, "\n")
	me.Name, _ = strconv.Unquote(name)
	me.Linkname, err = strconv.Unquote(link)
	if err != nil {
		return me, fmt.Errorf("manifest line %q: %w", line, ErrInvalid)
	}
	me.Kind, me.Mode, me.ModTime = Kind(kind), mode, time.Unix(0, mtime)
	if obj != "-" {
		if me.Object, err = digest.Parse(obj); err != nil {
			return me, fmt.Errorf("manifest line %q: %w", line, err)
		}
	}
	if me.Kind == KindChar || me.Kind == KindBlock {
		fmt.Sscanf(me.Linkname, "%d:%d", &me.Devmajor, &me.Devminor)
		me.Linkname = ""
	}
	return me, nil
}
