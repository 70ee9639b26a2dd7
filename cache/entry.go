package cache

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math"
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

// ParseManifestLine decodes a line written by manifestLine. It reads the
// fields by hand (fmt.Sscanf cost 10 µs a line: a tenth of a second for a
// Debian image's manifest) and refuses anything manifestLine would not
// write there: signs, missing or extra fields, a bad quote.
func ParseManifestLine(line string) (ManifestEntry, error) {
	me, ok := parseManifestLine(strings.TrimSuffix(line, "\n"))
	if !ok {
		return ManifestEntry{}, fmt.Errorf("manifest line %q: %w", line, ErrInvalid)
	}
	return me, nil
}

func parseManifestLine(line string) (me ManifestEntry, ok bool) {
	var f [7]string
	rest := line
	for i := range f {
		if f[i], rest, ok = strings.Cut(rest, " "); !ok || f[i] == "" {
			return me, false
		}
	}
	if len(f[0]) != 1 {
		return me, false
	}
	me.Kind = Kind(f[0][0])
	mode, err1 := strconv.ParseUint(unsigned(f[1]), 8, 32)
	uid, err2 := strconv.ParseInt(unsigned(f[2]), 10, 64)
	gid, err3 := strconv.ParseInt(unsigned(f[3]), 10, 64)
	mtime, err4 := strconv.ParseInt(signed(f[4]), 10, 64)
	size, err5 := strconv.ParseInt(unsigned(f[6]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || uid > math.MaxInt || gid > math.MaxInt {
		return me, false
	}
	me.Mode, me.UID, me.GID, me.ModTime, me.Size = uint32(mode), int(uid), int(gid), time.Unix(0, mtime), size
	if f[5] != "-" {
		if me.Object = objectDigest(f[5]); me.Object == "" {
			return me, false
		}
	}
	name, err := strconv.QuotedPrefix(rest)
	if err != nil || len(rest) < len(name)+1 || rest[len(name)] != ' ' {
		return me, false
	}
	link := rest[len(name)+1:]
	if me.Name, err = strconv.Unquote(name); err != nil {
		return me, false
	}
	if me.Linkname, err = strconv.Unquote(link); err != nil {
		return me, false
	}
	if me.Kind == KindChar || me.Kind == KindBlock {
		maj, min, found := strings.Cut(me.Linkname, ":")
		ma, err1 := strconv.ParseUint(unsigned(maj), 10, 32)
		mi, err2 := strconv.ParseUint(unsigned(min), 10, 32)
		if !found || err1 != nil || err2 != nil {
			return me, false
		}
		me.Devmajor, me.Devminor, me.Linkname = uint32(ma), uint32(mi), ""
	}
	return me, true
}

// objectDigest is s as a digest if it is one (see ValidDigest), else "".
func objectDigest(s string) digest.Digest {
	if !ValidDigest(digest.Digest(s)) {
		return ""
	}
	return digest.Digest(s)
}

// ValidDigest reports whether d.Validate() would accept d: "sha256:" and
// 64 lowercase hex digits are checked by hand (go-digest's regexp was a
// tenth of a merge's time and 2% of an upgrade's), another algorithm goes
// through Validate.
func ValidDigest(d digest.Digest) bool {
	if hex, ok := strings.CutPrefix(string(d), "sha256:"); ok && len(hex) == 64 {
		for i := 0; i < len(hex); i++ {
			if c := hex[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
		return true
	}
	return d.Validate() == nil
}

// signed is s if it is a plain run of digits with or without a "-".
func signed(s string) string {
	if rest, neg := strings.CutPrefix(s, "-"); neg {
		return "-" + unsigned(rest)
	}
	return unsigned(s)
}

// unsigned is s if it is a plain run of digits, else a string no
// strconv parser accepts: manifestLine writes no signs.
func unsigned(s string) string {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return "!"
	}
	return s
}
