package cache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// listed reads tree d's manifest back as the entry list it records.
func listed(t *testing.T, s *Store, d digest.Digest) ([]ManifestEntry, []byte) {
	t.Helper()
	r, err := s.OpenManifest(d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var out []ManifestEntry
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		me, err := ParseManifestLine(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, me)
	}
	return out, raw
}

// buildList builds tree d from entries under its tree lock.
func buildList(s *Store, d digest.Digest, entries []ManifestEntry) (index.Tree, error) {
	ctx := context.Background()
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		return index.Tree{}, err
	}
	defer lock.Unlock()
	return s.BuildFromList(ctx, d, List{Entries: entries, Refs: []string{"list"}})
}

// sameTree compares every name of trees a and b: type, mode, owner,
// mtime, size, device, symlink target, xattrs and content; a regular file
// of b shares a's inode (both are the one object), except empty files.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	err := filepath.WalkDir(a, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		q := filepath.Join(b, rel)
		sa, sb := stat(t, p), stat(t, q)
		if sa.Mode != sb.Mode || sa.Uid != sb.Uid || sa.Gid != sb.Gid || sa.Mtim != sb.Mtim || sa.Size != sb.Size || sa.Rdev != sb.Rdev ||
			sa.Nlink != sb.Nlink && sa.Mode&0o170000 != 0o100000 {
			t.Errorf("%s: %+v, from the stream %+v", rel, sb, sa)
		}
		if !maps.EqualFunc(xattrs(t, p), xattrs(t, q), bytes.Equal) {
			t.Errorf("%s: xattrs %q, from the stream %q", rel, xattrs(t, q), xattrs(t, p))
		}
		switch sa.Mode & 0o170000 {
		case 0o120000:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(q)
			if la != lb {
				t.Errorf("%s: -> %q, from the stream %q", rel, lb, la)
			}
		case 0o100000:
			if sa.Size > 0 && sa.Ino != sb.Ino {
				t.Errorf("%s: not the stream tree's object", rel)
			}
			ca, _ := os.ReadFile(p)
			cb, _ := os.ReadFile(q)
			if !bytes.Equal(ca, cb) {
				t.Errorf("%s: content differs", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if na, nb := len(names(t, a)), len(names(t, b)); na != nb {
		t.Errorf("%d names at the top, from the stream %d", nb, na)
	}
}

// TestBuildFromListEqualsStream: the entries of a stream, listed with
// their objects, build the same tree (every object linked, nothing new) with a manifest
// identical byte for byte.
func TestBuildFromListEqualsStream(t *testing.T) {
	s := testStore(t)
	big := strings.Repeat("0123456789abcdef", smallFile/16+1)
	items := []item{
		{Entry: Entry{Name: ".", Kind: KindDir, Mode: 0o755, ModTime: mtime}},
		{Entry: Entry{Name: "etc", Kind: KindDir, Mode: 0o555, UID: 1, GID: 2, ModTime: mtime.Add(time.Nanosecond),
			Xattrs: map[string][]byte{"user.d": []byte("dir")}}},
		reg("etc/hostname", "box\n", 0o644),
		reg("etc/empty", "", 0o600),
		reg("etc/big", big, 0o644),
		{Entry: Entry{Name: "etc/su", Kind: KindFile, Mode: 0o4755, UID: 1000, GID: 1000, ModTime: mtime, Size: 2,
			Xattrs: map[string][]byte{"user.x": []byte("1")}}, content: "su"},
		{Entry: Entry{Name: "etc/mtab", Kind: KindSymlink, Linkname: "/proc/mounts", UID: 5, GID: 6, ModTime: mtime}},
		{Entry: Entry{Name: "etc/again", Kind: KindHardlink, Linkname: "etc/hostname", ModTime: mtime}},
		{Entry: Entry{Name: "etc/mtab2", Kind: KindHardlink, Linkname: "etc/mtab", ModTime: mtime}},
		{Entry: Entry{Name: "dev", Kind: KindDir, Mode: 0o755, ModTime: mtime}},
		{Entry: Entry{Name: "dev/null", Kind: KindChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime}},
		{Entry: Entry{Name: "dev/sda", Kind: KindBlock, Mode: 0o660, GID: 6, Devmajor: 8, Devminor: 0, ModTime: mtime}},
		{Entry: Entry{Name: "fifo", Kind: KindFIFO, Mode: 0o620, UID: 3, ModTime: mtime}},
	}
	streamed := build(t, s, digest.FromString("stream"), items...)
	_, raw := listed(t, s, streamed.Digest)
	var entries []ManifestEntry
	for _, it := range items {
		e := ManifestEntry{Entry: it.Entry}
		if it.Kind == KindFile {
			e.Object = objectOf(it)
		}
		entries = append(entries, e)
	}

	d := digest.FromString("list")
	tr, err := buildList(s, d, entries)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Manifest != streamed.Manifest || tr.Files != streamed.Files || tr.Bytes != streamed.Bytes || tr.NewBytes != 0 {
		t.Errorf("record %+v, from the stream %+v (and no new bytes)", tr, streamed)
	}
	if _, again := listed(t, s, d); !bytes.Equal(again, raw) {
		t.Errorf("manifest differs:\n%s\nfrom the stream:\n%s", again, raw)
	}
	sameTree(t, s.TreePath(streamed.Digest), s.TreePath(d))
}

// TestBuildFromListRefuses: a hostile or wrong list is refused with the
// condition it breaks, nothing is published, nothing lands outside the
// tree, and the staging and lease are gone (testStore's check).
func TestBuildFromListRefuses(t *testing.T) {
	s := testStore(t)
	file := reg("f", "stored content", 0o644)
	build(t, s, digest.FromString("base"), file)
	stored := ManifestEntry{Entry: file.Entry, Object: objectOf(file)}
	at := func(name string) ManifestEntry { e := stored; e.Name = name; return e }
	dir := func(name string) ManifestEntry {
		return ManifestEntry{Entry: Entry{Name: name, Kind: KindDir, Mode: 0o755, ModTime: mtime}}
	}
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name    string
		entries []ManifestEntry
		want    error
	}{
		{"missing object", []ManifestEntry{func() ManifestEntry {
			e := stored
			e.Object = digest.FromString("no such object")
			return e
		}()}, ErrNotFound},
		{"object not a digest", []ManifestEntry{func() ManifestEntry { e := stored; e.Object = "sha256:../../../etc"; return e }()}, ErrInvalid},
		{"object of another mode", []ManifestEntry{func() ManifestEntry { e := stored; e.Mode = 0o4755; return e }()}, ErrInvalid},
		{"object of another size", []ManifestEntry{func() ManifestEntry { e := stored; e.Size++; return e }()}, ErrInvalid},
		{"empty file naming an object", []ManifestEntry{func() ManifestEntry { e := stored; e.Size = 0; return e }()}, ErrInvalid},
		{"object on a directory", []ManifestEntry{func() ManifestEntry { e := dir("d"); e.Object = stored.Object; return e }()}, ErrInvalid},
		{"host xattr", []ManifestEntry{func() ManifestEntry {
			e := dir("d")
			e.Xattrs = map[string][]byte{"trusted.overlay.opaque": []byte("y")}
			return e
		}()}, ErrInvalid},
		{"unknown kind", []ManifestEntry{func() ManifestEntry { e := dir("d"); e.Kind = 'x'; return e }()}, ErrInvalid},
		{"char device 0:0, an overlayfs whiteout", []ManifestEntry{{Entry: Entry{Name: "w", Kind: KindChar, Mode: 0o600, ModTime: mtime}}}, ErrInvalid},
		{"dot-dot", []ManifestEntry{at("../escape")}, ErrUnsafe},
		{"dot-dot inside", []ManifestEntry{dir("a"), at("a/../../escape")}, ErrUnsafe},
		{"absolute", []ManifestEntry{at("/escape")}, ErrUnsafe},
		{"unclean", []ManifestEntry{dir("a"), at("a/./f")}, ErrUnsafe},
		{"empty name", []ManifestEntry{at("")}, ErrUnsafe},
		{"file at the root", []ManifestEntry{at(".")}, ErrUnsafe},
		{"through a symlink", []ManifestEntry{
			{Entry: Entry{Name: "l", Kind: KindSymlink, Linkname: outside, ModTime: mtime}}, at("l/escape")}, ErrUnsafe},
		{"hard link out", []ManifestEntry{{Entry: Entry{Name: "h", Kind: KindHardlink, Linkname: "../f", ModTime: mtime}}}, ErrUnsafe},
		{"parent not listed", []ManifestEntry{at("nodir/f")}, os.ErrNotExist},
		{"hard link before its target", []ManifestEntry{
			{Entry: Entry{Name: "h", Kind: KindHardlink, Linkname: "f", ModTime: mtime}}, at("f")}, os.ErrNotExist},
		{"duplicate", []ManifestEntry{at("f"), at("f")}, os.ErrExist},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := digest.FromString(c.name)
			_, err := buildList(s, d, c.entries)
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "tree "+d.String()+": entry ") {
				t.Errorf("error %q does not name the tree and the entry", err)
			}
			var rec index.Tree
			if err := s.View(func(tx *index.Tx) (err error) { rec, err = tx.Tree(d); return err }); !errors.Is(err, ErrNotFound) {
				t.Errorf("index has tree %+v after a refused list (%v)", rec, err)
			}
			if _, err := os.Lstat(s.TreePath(d)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("tree directory after a refused list: %v", err)
			}
			if left := names(t, outside); len(left) > 0 {
				t.Errorf("case %d wrote outside the tree: %q", i, left)
			}
		})
	}
	if left := names(t, filepath.Dir(s.TreePath(stored.Object))); len(left) != 1 {
		t.Errorf("trees after refused lists: %q, want only the base", left)
	}
}

// TestBuildFromListLinkLimit: an object at the file system's link limit
// is copied into a listed tree, with its content and metadata.
func TestBuildFromListLinkLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("links an object 65000 times")
	}
	s := testStore(t)
	it := reg("f", "linked to the limit", 0o640)
	it.UID, it.Xattrs = 4, map[string][]byte{"user.k": []byte("v")}
	base := build(t, s, digest.FromString("first"), it)
	obj := s.ObjectPath(objectOf(it))
	linkToLimit(t, obj)
	entries, _ := listed(t, s, base.Digest)
	tr, err := buildList(s, digest.FromString("second"), entries)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.TreePath(tr.Digest), "f")
	st := stat(t, p)
	if st.Ino == stat(t, obj).Ino || st.Nlink != 1 {
		t.Fatalf("not a copy: inode %d nlink %d", st.Ino, st.Nlink)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != it.content {
		t.Errorf("copy content %q, %v", b, err)
	}
	if st.Mode&0o7777 != it.Mode || int(st.Uid) != it.UID || st.Mtim.Nano() != it.ModTime.UnixNano() || !maps.EqualFunc(xattrs(t, p), it.Xattrs, bytes.Equal) {
		t.Errorf("copy metadata: mode %o uid %d mtime %d xattrs %q", st.Mode, st.Uid, st.Mtim.Nano(), xattrs(t, p))
	}
	if tr.NewBytes != int64(len(it.content)) || tr.Manifest != base.Manifest {
		t.Errorf("record %+v: want NewBytes %d and the first tree's manifest %s", tr, len(it.content), base.Manifest)
	}
}
