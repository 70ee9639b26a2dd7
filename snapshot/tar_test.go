package snapshot_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/escapetest"
	"github.com/rootswap/rootswap/internal/fsys"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// The archives below are written block by block rather than with
// archive/tar's Writer, which refuses most of what a hostile stream holds.

const mtimeDefault = 1700000000

// hdr is one raw tar entry. typ is written as is (tar.TypeRegA is a NUL).
type hdr struct {
	name         string
	typ          byte
	mode         int64
	uid, gid     int64
	size         int64 // declared size if not zero, else len(data)
	data         []byte
	link         string
	major, minor int64
	mtime        int64             // seconds; 0 means mtimeDefault
	pax          map[string]string // written as a PAX header in front
	sparse       []int64           // old GNU sparse map: offset, length pairs
	realSize     int64             // logical size of a sparse file
}

func file(name, content string, mode int64) hdr {
	return hdr{name: name, typ: tar.TypeReg, mode: mode, data: []byte(content)}
}
func dir(name string, mode int64) hdr { return hdr{name: name, typ: tar.TypeDir, mode: mode} }
func symlink(name, target string) hdr {
	return hdr{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}
func hardlink(name, target string) hdr {
	return hdr{name: name, typ: tar.TypeLink, mode: 0o644, link: target}
}
func device(name string, typ byte, major, minor int64) hdr {
	return hdr{name: name, typ: typ, mode: 0o660, major: major, minor: minor}
}
func withPAX(h hdr, kv ...string) hdr {
	h.pax = maps.Clone(h.pax)
	if h.pax == nil {
		h.pax = map[string]string{}
	}
	for i := 0; i < len(kv); i += 2 {
		h.pax[kv[i]] = kv[i+1]
	}
	return h
}
func owned(h hdr, uid, gid int64) hdr { h.uid, h.gid = uid, gid; return h }

// tarball is the entries followed by the end-of-archive marker.
func tarball(hs ...hdr) []byte { return append(entries(hs...), make([]byte, 1024)...) }

func entries(hs ...hdr) []byte {
	var out []byte
	for _, h := range hs {
		pax := maps.Clone(h.pax)
		if len(h.name) > 100 || len(h.link) > 100 {
			if pax == nil {
				pax = map[string]string{}
			}
			if len(h.name) > 100 {
				pax["path"] = h.name
			}
			if len(h.link) > 100 {
				pax["linkpath"] = h.link
			}
		}
		if len(pax) > 0 {
			recs := paxRecords(pax)
			out = append(out, header(hdr{name: "PaxHeader", typ: tar.TypeXHeader, mode: 0o644, data: recs})...)
			out = append(out, padded(recs)...)
		}
		out = append(out, header(h)...)
		out = append(out, padded(h.data)...)
	}
	return out
}

func header(h hdr) []byte {
	b := make([]byte, 512)
	copy(b[0:100], h.name)
	num(b[100:108], h.mode)
	num(b[108:116], h.uid)
	num(b[116:124], h.gid)
	size := h.size
	if size == 0 {
		size = int64(len(h.data))
	}
	num(b[124:136], size)
	mt := h.mtime
	if mt == 0 {
		mt = mtimeDefault
	}
	num(b[136:148], mt)
	b[156] = h.typ
	copy(b[157:257], h.link)
	if h.sparse != nil {
		copy(b[257:265], "ustar  \x00") // old GNU format
		for i := 0; i < len(h.sparse); i += 2 {
			num(b[386+12*i:398+12*i], h.sparse[i])
			num(b[398+12*i:410+12*i], h.sparse[i+1])
		}
		num(b[483:495], h.realSize)
	} else {
		copy(b[257:265], "ustar\x0000")
	}
	num(b[329:337], h.major)
	num(b[337:345], h.minor)
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// num writes octal when it fits and GNU base-256 (two's complement)
// otherwise, which is how negative and huge numbers reach a reader.
func num(b []byte, v int64) {
	if v >= 0 && v < 1<<(3*(len(b)-1)) {
		copy(b, fmt.Sprintf("%0*o\x00", len(b)-1, v))
		return
	}
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	b[0] |= 0x80
}

func paxRecords(m map[string]string) []byte {
	var out []byte
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		size := len(k) + len(v) + 3
		size += len(strconv.Itoa(size))
		rec := fmt.Sprintf("%d %s=%s\n", size, k, v)
		if len(rec) != size {
			rec = fmt.Sprintf("%d %s=%s\n", len(rec), k, v)
		}
		out = append(out, rec...)
	}
	return out
}

func padded(b []byte) []byte {
	return append(slices.Clone(b), make([]byte, (512-len(b)%512)%512)...)
}

// env is where one case runs: dir holds store/ and victim/ and nothing else.
type env struct {
	dir, victim string
}

// escape is a relative symlink target that leads from the tree root to the
// victim, both while staging (tmp/<id>/rootfs) and once published
// (trees/sha256/<hex>): four levels below dir either way.
const escape = "../../../../victim"

// oracle holds what must not change while a hostile archive is imported.
type oracle struct {
	dir        string
	neighbours []string
	victim     map[string]string
	host       map[string]string
}

// hostFiles are real host files that absolute names in the cases point at.
var hostFiles = []string{"/etc/passwd", "/etc/hostname"}

func newOracle(t testing.TB, dir, victim string) *oracle {
	o := &oracle{dir: dir, neighbours: escapetest.Names(t, dir), victim: escapetest.Fingerprint(t, victim), host: map[string]string{}}
	for _, p := range hostFiles {
		if _, err := os.Lstat(p); err == nil {
			maps.Copy(o.host, escapetest.Fingerprint(t, p))
		}
	}
	return o
}

func (o *oracle) check(t testing.TB, victim string) {
	t.Helper()
	if d := escapetest.Diff(o.victim, escapetest.Fingerprint(t, victim)); d != "" {
		t.Fatalf("PATH ESCAPE: victim changed:\n%s", d)
	}
	if got := escapetest.Names(t, o.dir); !slices.Equal(got, o.neighbours) {
		t.Fatalf("PATH ESCAPE: next to the store there is now %q, was %q", got, o.neighbours)
	}
	host := map[string]string{}
	for p := range o.host {
		maps.Copy(host, escapetest.Fingerprint(t, p))
	}
	if d := escapetest.Diff(o.host, host); d != "" {
		t.Fatalf("PATH ESCAPE: host file changed:\n%s", d)
	}
}

// openStore opens a store at p and registers its consistency check.
func openStore(t testing.TB, p string) *cache.Store {
	t.Helper()
	return storetest.Open(t, p)
}

func lstat(t testing.TB, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// describe lists a tree, root excluded, one line per entry:
// name type mode uid:gid [content | -> target | major:minor] [@mtime].
// The mtime is shown only when it is not mtimeDefault.
func describe(t testing.TB, root string) []string {
	var out []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := lstat(t, p)
		var kind byte
		extra := ""
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			kind = 'd'
		case syscall.S_IFREG:
			kind = 'f'
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if len(b) <= 40 {
				extra = " " + strconv.Quote(string(b))
			} else {
				sum := sha256.Sum256(b)
				extra = fmt.Sprintf(" %dB:%x", len(b), sum[:6])
			}
		case syscall.S_IFLNK:
			kind = 'l'
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			extra = " -> " + strconv.Quote(target)
		case syscall.S_IFCHR, syscall.S_IFBLK:
			kind = map[uint32]byte{syscall.S_IFCHR: 'c', syscall.S_IFBLK: 'b'}[st.Mode&syscall.S_IFMT]
			extra = fmt.Sprintf(" %d:%d", major(st.Rdev), minor(st.Rdev))
		case syscall.S_IFIFO:
			kind = 'p'
		default:
			kind = '?'
		}
		if st.Mtim.Sec != mtimeDefault || st.Mtim.Nsec != 0 {
			extra += fmt.Sprintf(" @%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		out = append(out, fmt.Sprintf("%s %c %04o %d:%d%s", qname(rel), kind, st.Mode&0o7777, st.Uid, st.Gid, extra))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func qname(s string) string {
	if !utf8.ValidString(s) || strings.ContainsAny(s, " \"\\\n\t") {
		return strconv.Quote(s)
	}
	return s
}

func major(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func minor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }

// tarCase is one archive. A case either is refused (refuse is set) or
// yields exactly the tree in want, plus whatever check asserts.
type tarCase struct {
	name   string
	tar    func(v env) []byte
	refuse string // the error must contain this: the offending entry
	is     error  // the error class of a refusal; snapshot.ErrUnsafeEntry if nil
	want   []string
	check  func(t *testing.T, tree string, v env)
}

// static is an archive that does not depend on where the victim is.
func static(hs ...hdr) func(env) []byte { return func(env) []byte { return tarball(hs...) } }

// tree lines for the common parents.
const (
	etcDir = "etc d 0755 0:0"
	binDir = "bin d 0755 0:0"
	devDir = "dev d 0755 0:0"
)

func tarCases() []tarCase {
	capV2 := "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" // cap_net_bind_service+ep
	capV3 := "\x01\x00\x00\x03" + capV2[4:]                                                     // the same, root uid follows
	deep := strings.Repeat("d/", 256) + "f"
	long := strings.Repeat(strings.Repeat("n", 255)+"/", 15) + "f"
	tooLong := strings.Repeat(strings.Repeat("n", 255)+"/", 16) + "f"
	twoFiles := func() []byte {
		return tarball(file("a", "first", 0o644), file("b", strings.Repeat("B", 700), 0o644))
	}
	sparse := hdr{name: "big", typ: tar.TypeGNUSparse, mode: 0o644, data: []byte("0123456789"), sparse: []int64{0, 10}, realSize: 1 << 40}
	emptyFiles := func(env) []byte {
		var hs []hdr
		for i := range 3000 {
			hs = append(hs, owned(hdr{name: fmt.Sprintf("e/%04d", i), typ: tar.TypeReg, mode: 0o640, mtime: 1600000000}, 7, 8))
		}
		return tarball(hs...)
	}

	return []tarCase{
		// ".." in every spelling, in names, PAX and GNU long names.
		{name: "dotdot", tar: static(file("../x", "x", 0o644)), refuse: `"../x"`},
		{name: "dotdot after a name", tar: static(file("a/../../x", "x", 0o644)), refuse: `"a/../../x"`},
		{name: "dotdot after dot", tar: static(file("./../x", "x", 0o644)), refuse: `"./../x"`},
		{name: "dotdot last", tar: static(dir("a/..", 0o755)), refuse: `"a/.."`},
		{name: "dotdot alone", tar: static(dir("..", 0o755)), refuse: `".."`},
		{name: "dotdot slash", tar: static(dir("../", 0o755)), refuse: `"../"`},
		{name: "dotdot last slash", tar: static(dir("a/../", 0o755)), refuse: `"a/../"`},
		{name: "absolute dotdot", tar: static(file("/../x", "x", 0o644)), refuse: `"/../x"`},
		{name: "dotdot to the victim", tar: static(file(escape+"/file", "pwned", 0o644)), refuse: `"` + escape + `/file"`},
		{name: "dotdot in a PAX path", tar: static(withPAX(file("safe", "pwned", 0o644), "path", escape+"/file")), refuse: `"` + escape + `/file"`},
		{name: "dotdot in a GNU long name", tar: static(
			hdr{name: "././@LongLink", typ: tar.TypeGNULongName, data: []byte(escape + "/file\x00")},
			file("safe", "pwned", 0o644)), refuse: `"` + escape + `/file"`},
		{name: "empty name", tar: static(file("", "x", 0o644)), refuse: `entry ""`},

		// Absolute names are stripped as tar strips them.
		{name: "absolute name", tar: static(file("/etc/passwd", "root::0:0::/:/bin/sh\n", 0o644)),
			want: []string{etcDir, `etc/passwd f 0644 0:0 "root::0:0::/:/bin/sh\n"`}},
		{name: "absolute doubled slashes", tar: static(file("//etc//hostname", "evil", 0o644)),
			want: []string{etcDir, `etc/hostname f 0644 0:0 "evil"`}},
		{name: "absolute name of the victim", tar: func(v env) []byte { return tarball(file(v.victim+"/file", "pwned", 0o644)) },
			check: func(t *testing.T, tree string, v env) {
				if b, err := os.ReadFile(filepath.Join(tree, v.victim, "file")); err != nil || string(b) != "pwned" {
					t.Errorf("tree%s/file: %q, %v", v.victim, b, err)
				}
			}},

		// Symlinks as parents, one and two hops, absolute and relative.
		{name: "symlink parent absolute", tar: func(v env) []byte {
			return tarball(symlink("link", v.victim), file("link/file", "pwned", 0o644))
		}, refuse: `"link/file"`},
		{name: "symlink parent relative", tar: static(symlink("link", escape), file("link/file", "pwned", 0o644)), refuse: `"link/file"`},
		{name: "symlink parent two hops", tar: static(symlink("a", "b"), symlink("b", escape), file("a/file", "pwned", 0o644)), refuse: `"a/file"`},
		{name: "symlink parent of a directory", tar: static(symlink("s", escape), dir("s/sub", 0o777)), refuse: `"s/sub"`},
		{name: "symlink parent of a device", tar: static(symlink("dev", escape), device("dev/null", tar.TypeChar, 1, 3)), refuse: `"dev/null"`},
		{name: "symlink parent of a hard link", tar: static(file("f", "pwned", 0o644), symlink("s", escape), hardlink("s/h", "f")), refuse: `"s/h"`},
		{name: "symlink parent of a symlink", tar: static(symlink("s", escape), symlink("s/file", "/etc/shadow")), refuse: `"s/file"`},
		{name: "hardlinked symlink parent", tar: static(symlink("s", escape), hardlink("h", "s"), file("h/file", "pwned", 0o644)), refuse: `"h/file"`},
		{name: "directory replaced by a symlink", tar: static(dir("d", 0o755), symlink("d", escape), file("d/file", "pwned", 0o644)), refuse: `"d"`},
		{name: "symlink replaced by a directory", tar: static(symlink("d", escape), dir("d/", 0o777)), refuse: `"d/"`},

		// Hard links.
		{name: "hard link out", tar: static(hardlink("h", escape+"/file")), refuse: `"h"`},
		{name: "hard link absolute to the victim", tar: func(v env) []byte { return tarball(hardlink("h", v.victim+"/file")) }, refuse: `"h"`},
		{name: "hard link to a directory", tar: static(dir("d", 0o755), hardlink("h", "d")), refuse: `"h"`},
		{name: "hard link to the root", tar: static(file("f", "x", 0o644), hardlink("h", ".")), refuse: `"h"`},
		{name: "hard link to an implicit parent", tar: static(file("d/f", "x", 0o644), hardlink("h", "d")), refuse: `"h"`},
		{name: "hard link forward", tar: static(hardlink("h", "f"), file("f", "x", 0o644)), refuse: `"h"`},
		{name: "hard link to itself", tar: static(hardlink("h", "h")), refuse: `"h"`},
		{name: "hard link empty target", tar: static(hardlink("h", "")), refuse: `"h"`},
		{name: "hard link through a symlink", tar: static(dir("d", 0o755), file("d/f", "x", 0o644), symlink("s", "d"), hardlink("h", "s/f")), refuse: `"h"`},
		{name: "hard link to a fifo", tar: static(hdr{name: "p", typ: tar.TypeFifo, mode: 0o644}, hardlink("h", "p")), refuse: `"h"`},
		{name: "chmod through a hardlinked symlink", tar: func(v env) []byte {
			return tarball(symlink("s", v.victim+"/file"), hardlink("h", "s"), file("h", "", 0o7777))
		}, refuse: `"h"`},
		{name: "chmod dir through a hardlinked symlink", tar: func(v env) []byte {
			return tarball(symlink("s", v.victim), hardlink("h", "s"), dir("h", 0o777))
		}, refuse: `"h"`},

		// The root may only be a directory.
		{name: "root symlink dot", tar: func(v env) []byte { return tarball(symlink(".", v.victim), file("file", "pwned", 0o644)) }, refuse: `"."`},
		{name: "root symlink dot slash", tar: static(symlink("./", escape), file("file", "pwned", 0o644)), refuse: `"./"`},
		{name: "root symlink slash", tar: static(symlink("/", escape)), refuse: `"/"`},
		{name: "root regular file", tar: static(file(".", "x", 0o644)), refuse: `"."`},
		{name: "root hard link", tar: static(file("f", "x", 0o644), hardlink("./", "f")), refuse: `"./"`},

		// Duplicates and entries under non-directories.
		{name: "duplicate file", tar: static(file("a", "1", 0o644), file("a", "2", 0o644)), refuse: `"a"`},
		{name: "duplicate spelled differently", tar: static(file("a", "1", 0o644), file("./a", "2", 0o644)), refuse: `"./a"`},
		{name: "directory then file", tar: static(dir("a/", 0o755), file("a", "2", 0o644)), refuse: `"a"`},
		// tar would accept this and chmod the directory; a Docker export
		// always lists a directory before its contents.
		{name: "directory after its contents", tar: static(file("a/b", "1", 0o644), dir("a/", 0o700)), refuse: `"a/"`},
		{name: "file under a file", tar: static(file("f", "1", 0o644), file("f/x", "2", 0o644)), refuse: `"f/x"`},
		{name: "file under a symlink to the tree", tar: static(symlink("f", "."), file("f/x", "2", 0o644)), refuse: `"f/x"`},

		// Truncated streams, huge sizes, sparse files.
		{name: "truncated mid-header", tar: func(env) []byte { return twoFiles()[:512+512+300] }, refuse: `"a"`, is: io.ErrUnexpectedEOF},
		{name: "truncated mid-content", tar: func(env) []byte { return twoFiles()[:512+512+512+100] }, refuse: `"b"`, is: io.ErrUnexpectedEOF},
		{name: "truncated large file", tar: static(hdr{name: "big", typ: tar.TypeReg, mode: 0o644, size: 2 << 20, data: []byte("short")}), refuse: `"big"`, is: io.ErrUnexpectedEOF},
		{name: "truncated at an entry boundary", tar: func(env) []byte { return entries(file("a", "first", 0o644)) }, refuse: `"a"`, is: io.ErrUnexpectedEOF},
		{name: "empty stream", tar: func(env) []byte { return nil }, refuse: "end-of-archive", is: io.ErrUnexpectedEOF},
		{name: "one terabyte declared, ten bytes present", tar: static(withPAX(file("big", "0123456789", 0o644), "size", "1099511627776")), refuse: `"big"`, is: io.ErrUnexpectedEOF},
		{name: "one terabyte declared in base-256", tar: static(hdr{name: "big", typ: tar.TypeReg, mode: 0o644, size: 1 << 40, data: []byte("0123456789")}), refuse: `"big"`, is: io.ErrUnexpectedEOF},
		{name: "old GNU sparse terabyte", tar: static(sparse), refuse: `"big"`},
		{name: "PAX sparse terabyte", tar: static(withPAX(file("GNUSparseFile.0/big", "0123456789", 0o644),
			"GNU.sparse.major", "0", "GNU.sparse.minor", "1", "GNU.sparse.name", "big",
			"GNU.sparse.size", "1099511627776", "GNU.sparse.numblocks", "1", "GNU.sparse.map", "0,10")), refuse: `"big"`},
		{name: "size of a header-only entry is ignored", tar: static(hdr{name: "s", typ: tar.TypeSymlink, mode: 0o777, link: "t", size: 1 << 40}, file("f", "x", 0o644)),
			want: []string{`f f 0644 0:0 "x"`, `s l 0777 0:0 -> "t"`}},

		// Depth and length.
		{name: "deeper than 256", tar: static(file(deep, "x", 0o644)), refuse: "deeper than 256"},
		{name: "component longer than 255", tar: static(file("a/"+strings.Repeat("n", 256), "x", 0o644)), refuse: `"a/nnnn`},
		{name: "name longer than 4096", tar: static(file(tooLong, "x", 0o644)), refuse: `"nnnn`},
		{name: "deep but legal", tar: static(file(strings.Repeat("d/", 200)+"f", "x", 0o644)), check: func(t *testing.T, tree string, _ env) {
			if b, err := os.ReadFile(filepath.Join(tree, strings.Repeat("d/", 200)+"f")); err != nil || string(b) != "x" {
				t.Errorf("deep file: %q, %v", b, err)
			}
		}},
		{name: "long but legal", tar: static(file(long, "x", 0o644)), check: func(t *testing.T, tree string, _ env) {
			f, err := fsys.OpenDir(tree)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Lstat(long); err != nil {
				t.Errorf("long name: %v", err)
			}
		}},

		// NUL and non-UTF-8.
		{name: "NUL in a PAX path", tar: static(file("ok", "x", 0o644), withPAX(file("safe", "x", 0o644), "path", "a\x00/"+escape)), refuse: `"ok"`, is: tar.ErrHeader},
		{name: "NUL in a ustar name ends it", tar: static(file("evil\x00/"+escape, "x", 0o644)), want: []string{`evil f 0644 0:0 "x"`}},
		{name: "non-UTF-8 names kept", tar: static(dir("caf\xe9", 0o755), file("caf\xe9/\xff\xfe", "x", 0o644), symlink("l", "\xff\xfe")),
			want: []string{`"caf\xe9" d 0755 0:0`, `"caf\xe9/\xff\xfe" f 0644 0:0 "x"`, `l l 0777 0:0 -> "\xff\xfe"`}},

		// Devices and FIFOs.
		{name: "devices under dev", tar: static(dir("dev", 0o755), device("dev/null", tar.TypeChar, 1, 3), device("dev/loop9", tar.TypeBlock, 7, 9),
			device("/dev/sda", tar.TypeBlock, 8, 0), device("dev/big", tar.TypeChar, 4095, 1<<20-1),
			hdr{name: "dev/initctl", typ: tar.TypeFifo, mode: 0o600}, hdr{name: "run/fifo", typ: tar.TypeFifo, mode: 0o644}),
			want: []string{devDir, "dev/big c 0660 0:0 4095:1048575", "dev/initctl p 0600 0:0", "dev/loop9 b 0660 0:0 7:9", "dev/null c 0660 0:0 1:3",
				"dev/sda b 0660 0:0 8:0", "run d 0755 0:0", "run/fifo p 0644 0:0"}},
		{name: "char device outside dev", tar: static(device("etc/evil", tar.TypeChar, 1, 3)), refuse: `"etc/evil"`},
		{name: "block device named dev", tar: static(device("dev", tar.TypeBlock, 8, 0)), refuse: `"dev"`},
		{name: "device via dotdot", tar: static(device("dev/../sda", tar.TypeBlock, 8, 0)), refuse: `"dev/../sda"`},
		{name: "device major too large", tar: static(device("dev/x", tar.TypeChar, 4096+1, 3)), refuse: `"dev/x"`},
		{name: "device minor too large", tar: static(device("dev/x", tar.TypeBlock, 8, 1<<20)), refuse: `"dev/x"`},
		{name: "device major negative", tar: static(device("dev/x", tar.TypeChar, -1, 3)), refuse: `"dev/x"`},
		{name: "char device 0:0 (an overlayfs whiteout)", tar: static(dir("dev", 0o755), device("dev/x", tar.TypeChar, 0, 0)), refuse: `"dev/x"`},

		// Modes and owners.
		{name: "setuid setgid sticky", tar: static(dir("bin", 0o755), owned(file("bin/su", "su", 0o4755), 0, 0), owned(file("bin/wall", "wall", 0o2755), 0, 5),
			owned(file("bin/x", "x", 0o6711), 1000, 1000), dir("tmp", 0o1777), owned(dir("srv", 0o2775), 0, 50)),
			want: []string{binDir, `bin/su f 4755 0:0 "su"`, `bin/wall f 2755 0:5 "wall"`, `bin/x f 6711 1000:1000 "x"`, "srv d 2775 0:50", "tmp d 1777 0:0"}},
		{name: "read-only directories", tar: static(dir("ro", 0o555), dir("ro/sub", 0o500), file("ro/sub/f", "x", 0o400), file("ro/g", "y", 0o444)),
			want: []string{"ro d 0555 0:0", `ro/g f 0444 0:0 "y"`, "ro/sub d 0500 0:0", `ro/sub/f f 0400 0:0 "x"`}},
		{name: "root entry metadata", tar: static(owned(dir("./", 0o700), 1000, 100), file("f", "x", 0o644)),
			want: []string{`f f 0644 0:0 "x"`},
			check: func(t *testing.T, tree string, _ env) {
				if st := lstat(t, tree); st.Mode&0o7777 != 0o700 || st.Uid != 1000 || st.Gid != 100 || st.Mtim.Sec != mtimeDefault {
					t.Errorf("root: mode %o owner %d:%d mtime %d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec)
				}
			}},
		{name: "uid 2^32-1", tar: static(withPAX(file("f", "x", 0o644), "uid", "4294967295")), refuse: `"f"`},
		{name: "uid 2^32", tar: static(owned(file("f", "x", 0o644), 1<<32, 0)), refuse: `"f"`},
		{name: "uid negative", tar: static(owned(file("f", "x", 0o644), -1, 0)), refuse: `"f"`},
		{name: "gid 2^32-1 on a directory", tar: static(owned(dir("d", 0o755), 0, 1<<32-1)), refuse: `"d"`},
		{name: "largest owner", tar: static(owned(file("f", "x", 0o644), 1<<32-2, 65534), owned(symlink("s", "f"), 70000, 1<<32-2)),
			want: []string{`f f 0644 4294967294:65534 "x"`, `s l 0777 70000:4294967294 -> "f"`}},

		// Times.
		{name: "mtime out of range", tar: static(withPAX(file("f", "x", 0o644), "mtime", "10413792000")), refuse: `"f"`},
		{name: "mtime before 1970 and fractional", tar: static(withPAX(file("old", "x", 0o644), "mtime", "-86400.5"), withPAX(file("frac", "y", 0o644), "mtime", "1700000000.123456789")),
			want: []string{`frac f 0644 0:0 "y" @1700000000.123456789`, `old f 0644 0:0 "x" @-86401.500000000`}},

		// Extended attributes.
		{name: "xattrs kept and dropped", tar: static(withPAX(file("bin/ping", "ping", 0o755),
			"SCHILY.xattr.security.capability", capV2, "SCHILY.xattr.user.foo", "bar\x00baz", "SCHILY.xattr.security.selinux", "system_u:object_r:bin_t:s0")),
			want: []string{binDir, `bin/ping f 0755 0:0 "ping"`},
			check: func(t *testing.T, tree string, _ env) {
				got := xattrsOf(t, filepath.Join(tree, "bin/ping"))
				want := map[string]string{"security.capability": capV2, "user.foo": "bar\x00baz"}
				if !maps.Equal(got, want) {
					t.Errorf("xattrs %q, want %q", got, want)
				}
			}},
		// The kernel keeps a revision 3 capability for root uid 0 as
		// revision 2; the object's name must describe what is on disk.
		{name: "v3 capability for root", tar: static(withPAX(file("ping", "ping", 0o755), "SCHILY.xattr.security.capability", capV3+"\x00\x00\x00\x00")),
			want: []string{`ping f 0755 0:0 "ping"`},
			check: func(t *testing.T, tree string, _ env) {
				if got := xattrsOf(t, filepath.Join(tree, "ping"))["security.capability"]; got != capV2 {
					t.Errorf("capability %x, want %x", got, capV2)
				}
			}},
		{name: "v3 capability for uid 1000", tar: static(withPAX(file("ping", "ping", 0o755), "SCHILY.xattr.security.capability", capV3+"\xe8\x03\x00\x00")),
			want: []string{`ping f 0755 0:0 "ping"`},
			check: func(t *testing.T, tree string, _ env) {
				if got, want := xattrsOf(t, filepath.Join(tree, "ping"))["security.capability"], capV3+"\xe8\x03\x00\x00"; got != want {
					t.Errorf("capability %x, want %x", got, want)
				}
			}},
		{name: "overlay opaque xattr", tar: static(withPAX(dir("d", 0o755), "SCHILY.xattr.trusted.overlay.opaque", "y")), refuse: `"d"`},
		{name: "trusted xattr on a file", tar: static(withPAX(file("f", "x", 0o644), "SCHILY.xattr.trusted.x", "y")), refuse: `"f"`},
		{name: "unknown security xattr", tar: static(withPAX(file("f", "x", 0o644), "SCHILY.xattr.security.ima", "y")), refuse: `"f"`},
		{name: "capability on a directory", tar: static(withPAX(dir("d", 0o755), "SCHILY.xattr.security.capability", capV2)), refuse: `"d"`},
		{name: "capability that is not one", tar: static(withPAX(file("f", "x", 0o755), "SCHILY.xattr.security.capability", "garbage")), refuse: `"f"`, is: syscall.EINVAL},

		// Whiteouts.
		{name: "whiteout", tar: static(file(".wh.x", "", 0o644)), refuse: `".wh.x"`},
		{name: "opaque whiteout", tar: static(dir("a", 0o755), file("a/.wh..wh..opq", "", 0o644)), refuse: `"a/.wh..wh..opq"`},
		{name: "whiteout directory", tar: static(dir(".wh.d/", 0o755)), refuse: `".wh.d/"`},

		// Types.
		{name: "contiguous file type", tar: static(hdr{name: "c", typ: tar.TypeCont, mode: 0o644, data: []byte("x")}), refuse: `"c"`},
		{name: "GNU volume header", tar: static(hdr{name: "vol", typ: 'V'}, file("f", "x", 0o644)), refuse: `"vol"`},
		{name: "old-style directory", tar: static(hdr{name: "d/", typ: tar.TypeRegA, mode: 0o750}, hdr{name: "d/f", typ: tar.TypeRegA, mode: 0o644, data: []byte("x")}),
			want: []string{"d d 0750 0:0", `d/f f 0644 0:0 "x"`}},
		{name: "PAX global header", tar: static(hdr{name: "g", typ: tar.TypeXGlobalHeader, data: paxRecords(map[string]string{"comment": "hi"})}, file("f", "x", 0o644)),
			want: []string{`f f 0644 0:0 "x"`}},

		// Legitimate archives that must be kept exactly.
		{name: "absolute symlinks", tar: func(v env) []byte {
			return tarball(symlink("etc/mtab", "/proc/mounts"), owned(symlink("v", v.victim), 1234, 1234),
				owned(symlink("vf", v.victim+"/file"), 1234, 1234), symlink("up", escape))
		}, check: func(t *testing.T, tree string, v env) {
			want := []string{etcDir, `etc/mtab l 0777 0:0 -> "/proc/mounts"`, `up l 0777 0:0 -> "` + escape + `"`,
				`v l 0777 1234:1234 -> "` + v.victim + `"`, `vf l 0777 1234:1234 -> "` + v.victim + `/file"`}
			if got := describe(t, tree); !slices.Equal(got, want) {
				t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}},
		{name: "absolute hard link names", tar: static(file("/bin/a", "same", 0o755), hardlink("/bin/b", "/bin/a"), symlink("s", "bin/a"), hardlink("t", "s")),
			want: []string{binDir, `bin/a f 0755 0:0 "same"`, `bin/b f 0755 0:0 "same"`, `s l 0777 0:0 -> "bin/a"`, `t l 0777 0:0 -> "bin/a"`},
			check: func(t *testing.T, tree string, _ env) {
				sameInode(t, true, filepath.Join(tree, "bin/a"), filepath.Join(tree, "bin/b"))
				sameInode(t, true, filepath.Join(tree, "s"), filepath.Join(tree, "t"))
			}},
		{name: "3000 empty files", tar: emptyFiles, check: func(t *testing.T, tree string, _ env) {
			inodes := map[uint64]bool{}
			for i := range 3000 {
				st := lstat(t, filepath.Join(tree, fmt.Sprintf("e/%04d", i)))
				if st.Mode != syscall.S_IFREG|0o640 || st.Uid != 7 || st.Gid != 8 || st.Size != 0 || st.Mtim.Sec != 1600000000 || st.Mtim.Nsec != 0 || st.Nlink != 1 || inodes[st.Ino] {
					t.Fatalf("e/%04d: mode %o owner %d:%d size %d mtime %d.%d nlink %d shared %v",
						i, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Nlink, inodes[st.Ino])
				}
				inodes[st.Ino] = true
			}
		}},
		{name: "identical content", tar: static(file("a", "content", 0o644), file("b", "content", 0o644), file("c", "content", 0o755),
			owned(file("d", "content", 0o644), 1, 0), hdr{name: "e", typ: tar.TypeReg, mode: 0o644, data: []byte("content"), mtime: mtimeDefault + 1},
			withPAX(file("f", "content", 0o644), "SCHILY.xattr.user.x", "1")),
			want: []string{`a f 0644 0:0 "content"`, `b f 0644 0:0 "content"`, `c f 0755 0:0 "content"`, `d f 0644 1:0 "content"`,
				`e f 0644 0:0 "content" @1700000001.000000000`, `f f 0644 0:0 "content"`},
			check: func(t *testing.T, tree string, v env) {
				a := filepath.Join(tree, "a")
				sameInode(t, true, a, filepath.Join(tree, "b"))
				for _, other := range []string{"c", "d", "e", "f"} {
					sameInode(t, false, a, filepath.Join(tree, other))
				}
				store := filepath.Join(v.dir, "store")
				obj := findObject(t, store, lstat(t, a).Ino)
				if obj == "" {
					t.Errorf("a and b are not linked to an object")
				}
			}},
	}
}

func sameInode(t *testing.T, want bool, a, b string) {
	t.Helper()
	if got := lstat(t, a).Ino == lstat(t, b).Ino; got != want {
		t.Errorf("%s and %s share an inode: %v, want %v", a, b, got, want)
	}
}

func findObject(t *testing.T, store string, ino uint64) string {
	dir := filepath.Join(store, "objects", "sha256")
	for _, e := range escapetest.Names(t, dir) {
		if lstat(t, filepath.Join(dir, e)).Ino == ino {
			return e
		}
	}
	return ""
}

func xattrsOf(t *testing.T, p string) map[string]string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	x, err := fsys.Xattrs(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range x {
		out[k] = string(v)
	}
	return out
}

// TestHostileArchives imports each case into a fresh store next to a
// victim directory and checks that the victim, the store's neighbours and
// the host files named by the cases are untouched, and that the archive
// is either refused with one line naming the entry and nothing left
// behind, or kept exactly.
func TestHostileArchives(t *testing.T) {
	cases := tarCases()
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			v := env{dir: dir, victim: escapetest.Victim(t, dir)}
			s := openStore(t, filepath.Join(dir, "store"))
			archive := c.tar(v)
			o := newOracle(t, dir, v.victim)

			tr, err := snapshot.ImportTar(context.Background(), s, bytes.NewReader(archive), "")
			o.check(t, v.victim)
			storetest.CheckIdle(t, s)

			if c.refuse != "" {
				refused(t, s, err, c.refuse, c.is)
				return
			}
			if err != nil {
				t.Fatalf("refused a good archive: %v", err)
			}
			if want := digest.FromBytes(archive); tr.Digest != want {
				t.Errorf("digest %s, want the stream's %s", tr.Digest, want)
			}
			tree := storetest.Tree(t, s, tr.Digest)
			if c.want != nil {
				if got := describe(t, tree); !slices.Equal(got, c.want) {
					t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
				}
			}
			if c.check != nil {
				c.check(t, tree, v)
			}
		})
	}
}

// refused checks a refusal: the error class, one line naming the entry,
// and no tree, manifest or index record.
func refused(t *testing.T, s *cache.Store, err error, name string, is error) {
	t.Helper()
	if is == nil {
		is = snapshot.ErrUnsafeEntry
	}
	if err == nil {
		t.Fatalf("accepted; want a refusal naming %s", name)
	}
	if !errors.Is(err, is) {
		t.Errorf("error %q does not wrap %q", err, is)
	}
	if msg := err.Error(); !strings.Contains(msg, name) || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming %s", msg, name)
	}
	for _, d := range []string{"trees/sha256", "manifests/sha256"} {
		if left := escapetest.Names(t, filepath.Join(s.Root(), d)); len(left) > 0 {
			t.Errorf("%s left behind: %q", d, left)
		}
	}
	var trees []index.Tree
	if err := s.View(func(tx *index.Tx) (err error) { trees, err = tx.Trees(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(trees) > 0 {
		t.Errorf("index records left behind: %+v", trees)
	}
}

// TestImportTwice checks that the key is the sha256 of every byte of the
// stream, padding after the end marker included, and that importing the
// same stream again returns the existing tree and leaves nothing behind.
func TestImportTwice(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "store"))
	archive := append(tarball(file("f", "x", 0o644)), make([]byte, 10240)...)
	ctx := context.Background()
	t1, err := snapshot.ImportTar(ctx, s, bytes.NewReader(archive), "a")
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(archive); t1.Digest != want {
		t.Errorf("digest %s, want %s", t1.Digest, want)
	}
	t2, err := snapshot.ImportTar(ctx, s, bytes.NewReader(archive), "b")
	if err != nil {
		t.Fatal(err)
	}
	if t2.Digest != t1.Digest || !t2.Created.Equal(t1.Created) || !slices.Equal(t2.Refs, []string{"a"}) {
		t.Errorf("second import: %+v, first %+v", t2, t1)
	}
	storetest.CheckIdle(t, s)
}

// TestImportCancelled: a cancelled import leaves nothing behind.
func TestImportCancelled(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "store"))
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{r: bytes.NewReader(tarball(file("a", "1", 0o644), file("b", "2", 0o644))), n: 1024, cancel: cancel}
	if _, err := snapshot.ImportTar(ctx, s, r, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	storetest.CheckIdle(t, s)
	if left := escapetest.Names(t, filepath.Join(s.Root(), "trees/sha256")); len(left) > 0 {
		t.Errorf("trees left behind: %q", left)
	}
}

// cancelAfter cancels once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}
