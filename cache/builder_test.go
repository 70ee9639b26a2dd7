package cache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

var mtime = time.Unix(1700000000, 0)

// item is an entry and, for a regular file, its content.
type item struct {
	Entry
	content string
}

func reg(name, content string, mode uint32) item {
	return item{Entry{Name: name, Kind: KindFile, Mode: mode, ModTime: mtime, Size: int64(len(content))}, content}
}

// build stages items as tree d and commits it.
func build(t *testing.T, s *Store, d digest.Digest, items ...item) index.Tree {
	t.Helper()
	ctx := context.Background()
	b, err := s.NewBuilder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	for _, it := range items {
		if err := b.Add(it.Entry, strings.NewReader(it.content)); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	tr, err := b.Commit(ctx, d, []string{"test"})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// objectOf is the object a file entry with this content is stored as.
func objectOf(it item) digest.Digest {
	h := objectHasher(&it.Entry)
	io.WriteString(h, it.content)
	return hashDigest(h)
}

func TestBuilderRoundTrip(t *testing.T) {
	s := testStore(t)
	big := strings.Repeat("0123456789abcdef", smallFile/16+1) // streamed, not hashed in memory
	items := []item{
		{Entry: Entry{Name: ".", Kind: KindDir, Mode: 0o755, ModTime: mtime}},
		{Entry: Entry{Name: "etc", Kind: KindDir, Mode: 0o555, UID: 1, GID: 2, ModTime: mtime.Add(time.Nanosecond)}},
		reg("etc/hostname", "box\n", 0o644),
		reg("etc/empty", "", 0o600),
		reg("etc/big", big, 0o644),
		{Entry: Entry{Name: "etc/su", Kind: KindFile, Mode: 0o4755, UID: 1000, GID: 1000, ModTime: mtime, Size: 2,
			Xattrs: map[string][]byte{"user.x": []byte("1")}}, content: "su"},
		{Entry: Entry{Name: "etc/mtab", Kind: KindSymlink, Linkname: "/proc/mounts", UID: 5, GID: 6, ModTime: mtime}},
		{Entry: Entry{Name: "etc/again", Kind: KindHardlink, Linkname: "etc/hostname", ModTime: mtime}},
		{Entry: Entry{Name: "null", Kind: KindChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime}},
		{Entry: Entry{Name: "fifo", Kind: KindFIFO, Mode: 0o620, UID: 3, ModTime: mtime}},
	}
	d := digest.FromString("round trip")
	tr := build(t, s, d, items...)
	if tr.Digest != d || tr.Files != int64(len(items)) || tr.Bytes != int64(4+len(big)+2) || tr.NewBytes != tr.Bytes {
		t.Errorf("record %+v", tr)
	}
	root := s.TreePath(d)
	for _, it := range items {
		p := filepath.Join(root, it.Name)
		st := stat(t, p)
		e := it.Entry
		if e.Kind == KindHardlink {
			if st.Ino != stat(t, filepath.Join(root, e.Linkname)).Ino {
				t.Errorf("%s: not a hard link of %s", e.Name, e.Linkname)
			}
			continue
		}
		wantType := map[Kind]uint32{KindDir: syscall.S_IFDIR, KindFile: syscall.S_IFREG, KindSymlink: syscall.S_IFLNK,
			KindChar: syscall.S_IFCHR, KindFIFO: syscall.S_IFIFO}[e.Kind]
		wantMode := wantType | e.Mode
		if e.Kind == KindSymlink {
			wantMode = wantType | 0o777
		}
		if st.Mode != wantMode || int(st.Uid) != e.UID || int(st.Gid) != e.GID || st.Mtim.Nano() != e.ModTime.UnixNano() {
			t.Errorf("%s: mode %o owner %d:%d mtime %d, want %o %d:%d %d", e.Name, st.Mode, st.Uid, st.Gid, st.Mtim.Nano(),
				wantMode, e.UID, e.GID, e.ModTime.UnixNano())
		}
		switch e.Kind {
		case KindFile:
			if b, err := os.ReadFile(p); err != nil || string(b) != it.content {
				t.Errorf("%s: content %.20q, %v", e.Name, b, err)
			}
			if x := xattrs(t, p); !maps.EqualFunc(x, e.Xattrs, bytes.Equal) {
				t.Errorf("%s: xattrs %q, want %q", e.Name, x, e.Xattrs)
			}
		case KindSymlink:
			if target, err := os.Readlink(p); err != nil || target != e.Linkname {
				t.Errorf("%s: -> %q, %v", e.Name, target, err)
			}
		case KindChar:
			if st.Rdev != fsys.Mkdev(e.Devmajor, e.Devminor) {
				t.Errorf("%s: rdev %x", e.Name, st.Rdev)
			}
		}
	}

	// The manifest lists the entries in order and hashes to the record.
	raw, err := os.ReadFile(s.ManifestPath(d))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("\x1f\x8b")) {
		t.Errorf("manifest on disk is not gzip-compressed")
	}
	r, err := s.OpenManifest(d)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(mf); got != tr.Manifest {
		t.Errorf("manifest hashes to %s, record says %s", got, tr.Manifest)
	}
	sc := bufio.NewScanner(bytes.NewReader(mf))
	for i := 0; sc.Scan(); i++ {
		me, err := ParseManifestLine(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		want := items[i].Entry
		if me.Name != want.Name || me.Kind != want.Kind || me.Mode != want.Mode || me.UID != want.UID || me.Linkname != want.Linkname ||
			me.Devmajor != want.Devmajor || me.Devminor != want.Devminor || !me.ModTime.Equal(want.ModTime) || me.Size != want.Size {
			t.Errorf("manifest line %d: %+v, want %+v", i, me.Entry, want)
		}
		if want.Kind == KindFile && me.Object != objectOf(items[i]) {
			t.Errorf("manifest line %d: object %s, want %s", i, me.Object, objectOf(items[i]))
		}
	}
}

func xattrs(t *testing.T, p string) map[string][]byte {
	t.Helper()
	sz, err := syscall.Listxattr(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sz)
	if _, err := syscall.Listxattr(p, buf); err != nil {
		t.Fatal(err)
	}
	var out map[string][]byte
	for _, k := range strings.Split(strings.TrimRight(string(buf), "\x00"), "\x00") {
		if k == "" {
			continue
		}
		v := make([]byte, 256)
		n, err := syscall.Getxattr(p, k, v)
		if err != nil {
			t.Fatal(err)
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[k] = v[:n]
	}
	return out
}

// TestBuilderDedupe: two trees sharing a file (content and every piece of
// metadata) share its inode with the object; a file that differs in mode,
// owner, mtime or xattrs never does, and keeps its own metadata.
func TestBuilderDedupe(t *testing.T) {
	s := testStore(t)
	big := strings.Repeat("x", smallFile+1)
	base := reg("f", "shared content", 0o644)
	bigBase := reg("big", big, 0o644)
	build(t, s, digest.FromString("a"), base, bigBase)

	variants := map[string]func(e *Entry){
		"mode":   func(e *Entry) { e.Mode = 0o755 },
		"setuid": func(e *Entry) { e.Mode |= 0o4000 },
		"uid":    func(e *Entry) { e.UID = 1 },
		"gid":    func(e *Entry) { e.GID = 1 },
		"mtime":  func(e *Entry) { e.ModTime = e.ModTime.Add(time.Nanosecond) },
		"xattr":  func(e *Entry) { e.Xattrs = map[string][]byte{"user.a": []byte("1")} },
		"xattr2": func(e *Entry) { e.Xattrs = map[string][]byte{"user.a": []byte("2")} },
	}
	items := []item{base, bigBase}
	items[0].Name, items[1].Name = "same", "bigsame"
	for name, change := range variants {
		it := base
		it.Name = name
		change(&it.Entry)
		items = append(items, it)
	}
	tr := build(t, s, digest.FromString("b"), items...)
	if want := int64(len(variants) * len(base.content)); tr.NewBytes != want {
		t.Errorf("NewBytes %d, want %d (only the variants are new)", tr.NewBytes, want)
	}

	a, b := s.TreePath(digest.FromString("a")), s.TreePath(digest.FromString("b"))
	obj := stat(t, s.ObjectPath(objectOf(base))).Ino
	if stat(t, filepath.Join(a, "f")).Ino != obj || stat(t, filepath.Join(b, "same")).Ino != obj {
		t.Error("identical files do not share the object's inode")
	}
	if stat(t, filepath.Join(a, "big")).Ino != stat(t, filepath.Join(b, "bigsame")).Ino {
		t.Error("identical large files do not share an inode")
	}
	if n := stat(t, filepath.Join(b, "bigsame")).Nlink; n != 3 {
		t.Errorf("large object has %d links, want 3 (the object and one per tree)", n)
	}
	seen := map[uint64]string{obj: "f"}
	for _, it := range items[2:] {
		p := filepath.Join(b, it.Name)
		st := stat(t, p)
		if other, ok := seen[st.Ino]; ok {
			t.Errorf("%s shares an inode with %s", it.Name, other)
		}
		seen[st.Ino] = it.Name
		if st.Mode&0o7777 != it.Mode || int(st.Uid) != it.UID || int(st.Gid) != it.GID || st.Mtim.Nano() != it.ModTime.UnixNano() ||
			!maps.EqualFunc(xattrs(t, p), it.Xattrs, bytes.Equal) {
			t.Errorf("%s: mode %o owner %d:%d mtime %d xattrs %q, want %+v", it.Name, st.Mode, st.Uid, st.Gid, st.Mtim.Nano(), xattrs(t, p), it.Entry)
		}
		if st.Ino != stat(t, s.ObjectPath(objectOf(it))).Ino {
			t.Errorf("%s is not linked to its own object", it.Name)
		}
	}
}

// TestBuilderEmptyFiles: empty files are created in the tree, each its
// own inode, and no object is made for them.
func TestBuilderEmptyFiles(t *testing.T) {
	s := testStore(t)
	items := []item{reg("a", "", 0o644), reg("b", "", 0o644), reg("c", "", 0o644)}
	items[2].UID = 9
	build(t, s, digest.FromString("empty"), items...)
	seen := map[uint64]bool{}
	for _, it := range items {
		st := stat(t, filepath.Join(s.TreePath(digest.FromString("empty")), it.Name))
		if st.Nlink != 1 || seen[st.Ino] || st.Size != 0 || int(st.Uid) != it.UID || st.Mode&0o7777 != 0o644 {
			t.Errorf("%s: nlink %d shared %v size %d uid %d mode %o", it.Name, st.Nlink, seen[st.Ino], st.Size, st.Uid, st.Mode)
		}
		seen[st.Ino] = true
		if _, err := os.Lstat(s.ObjectPath(objectOf(it))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: object of an empty file: %v", it.Name, err)
		}
	}
}

// TestBuilderLinkLimit fills an object up to the file system's link
// limit (65000 on ext4, about a second) and checks that the next tree
// gets a copy with the same content and metadata instead of failing.
func TestBuilderLinkLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("links an object 65000 times")
	}
	s := testStore(t)
	it := reg("f", "linked to the limit", 0o640)
	it.UID, it.Xattrs = 4, map[string][]byte{"user.k": []byte("v")}
	build(t, s, digest.FromString("first"), it)
	obj := s.ObjectPath(objectOf(it))
	linkToLimit(t, obj)
	tr := build(t, s, digest.FromString("second"), it)
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
	if tr.NewBytes != int64(len(it.content)) {
		t.Errorf("NewBytes %d, want the copy's %d", tr.NewBytes, len(it.content))
	}
}

// linkToLimit links obj from a scratch directory until the file system
// refuses another link, or skips the test if it never does.
func linkToLimit(t *testing.T, obj string) {
	t.Helper()
	scratch := t.TempDir()
	for i := 0; ; i++ {
		err := os.Link(obj, filepath.Join(scratch, fmt.Sprint(i)))
		if errors.Is(err, syscall.EMLINK) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 70000 {
			t.Skip("no link limit on this file system")
		}
	}
}

// TestBuilderLease: the lease exists from NewBuilder on and goes with the
// index record; Abort drops it and the staging, more than once safely.
func TestBuilderLease(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	leases := func() []index.Lease {
		var l []index.Lease
		if err := s.View(func(tx *index.Tx) (err error) { l, err = tx.Leases(); return err }); err != nil {
			t.Fatal(err)
		}
		return l
	}
	b, err := s.NewBuilder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := leases(); len(l) != 1 || l[0].ID != b.st.ID || l[0].PID != os.Getpid() {
		t.Errorf("leases while staging: %+v", l)
	}
	if err := b.Add(reg("f", "content", 0o644).Entry, strings.NewReader("content")); err != nil {
		t.Fatal(err)
	}
	b.Abort()
	b.Abort()
	if l := leases(); len(l) != 0 {
		t.Errorf("leases after Abort: %+v", l)
	}
	if left := names(t, s.TmpDir()); len(left) > 0 {
		t.Errorf("tmp/ after Abort: %q", left)
	}
	if left := names(t, filepath.Join(s.root, "trees/sha256")); len(left) > 0 {
		t.Errorf("trees/ after Abort: %q", left)
	}
}

// TestBuilderCommitExisting: committing a digest the index has returns the
// existing record and discards the staging; a tree directory without a
// record (a crash leftover) or with a broken one is replaced.
func TestBuilderCommitExisting(t *testing.T) {
	s := testStore(t)
	d := digest.FromString("d")
	first := build(t, s, d, reg("f", "one", 0o644))
	again := build(t, s, d, reg("g", "two", 0o644))
	if !again.Created.Equal(first.Created) || again.Manifest != first.Manifest {
		t.Errorf("second commit: %+v, want the first record %+v", again, first)
	}
	if _, err := os.Lstat(filepath.Join(s.TreePath(d), "g")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("second commit changed the tree: %v", err)
	}

	leftover := digest.FromString("leftover")
	if err := os.MkdirAll(filepath.Join(s.TreePath(leftover), "junk"), 0o700); err != nil {
		t.Fatal(err)
	}
	build(t, s, leftover, reg("f", "new", 0o644))
	if got := names(t, s.TreePath(leftover)); len(got) != 1 || got[0] != "f" {
		t.Errorf("leftover tree not replaced: %q", got)
	}

	if err := s.Update(func(tx *index.Tx) error { first.Broken = true; return tx.PutTree(first) }); err != nil {
		t.Fatal(err)
	}
	fixed := build(t, s, d, reg("g", "two", 0o644))
	if fixed.Broken || fixed.Created.Equal(first.Created) {
		t.Errorf("broken tree not re-imported: %+v", fixed)
	}
	if got := names(t, s.TreePath(d)); len(got) != 1 || got[0] != "g" {
		t.Errorf("broken tree not replaced: %q", got)
	}
}

// TestManifestFormats: verify reads the gzip manifest a build writes and
// a plain one as early versions wrote, and notices a changed plain one.
func TestManifestFormats(t *testing.T) {
	s := testStore(t)
	d := digest.FromString("m")
	build(t, s, d, reg("a", "one", 0o644), reg("b", "two", 0o600))
	verify := func() []Problem {
		t.Helper()
		rep, err := s.Verify(context.Background(), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		return rep.Problems
	}
	if p := verify(); len(p) != 0 {
		t.Fatalf("fresh tree: %v", p)
	}
	r, err := s.OpenManifest(d)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.ManifestPath(d), plain, 0o600); err != nil {
		t.Fatal(err)
	}
	if p := verify(); len(p) != 0 {
		t.Fatalf("plain manifest: %v", p)
	}
	changed := bytes.Replace(plain, []byte(" 0 0 "), []byte(" 0 1 "), 1)
	if err := os.WriteFile(s.ManifestPath(d), changed, 0o600); err != nil {
		t.Fatal(err)
	}
	if p := verify(); len(p) == 0 {
		t.Fatal("a changed manifest passed verify")
	}
	// Undo the damage: the store check at cleanup verifies the rest.
	if err := os.WriteFile(s.ManifestPath(d), plain, 0o600); err != nil {
		t.Fatal(err)
	}
}
