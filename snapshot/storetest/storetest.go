// Package storetest makes stores for tests and checks them when the test
// ends, the way bbolt's internal/btesting runs MustCheck after every test:
// New opens a store in t.TempDir() and registers Check in t.Cleanup.
//
// Check is the one store-consistency check of the unit tests. It runs the
// real (*cache.Store).Verify, so a test fails on any problem `rootswap
// verify` would report, and adds what only holds between tests: nothing
// is left in tmp/, no lease is left, every object a manifest names exists
// (gc must not delete one a tree still names), and every regular file of
// a tree with more than one link is an object or has all its links in the
// tree (no tree is hard-linked to a file outside the store).
package storetest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
	"github.com/rootswap/rootswap/snapshot"
)

// LockTimeout is the store lock timeout of test stores: generous, since a
// test that waits on a lock waits for a step it started, however slow.
const LockTimeout = 10 * time.Second

// New opens a store in a fresh t.TempDir() and checks it when the test
// ends.
func New(t testing.TB) *cache.Store {
	t.Helper()
	return Open(t, filepath.Join(t.TempDir(), "store"))
}

// Open opens (creating if need be) the store at root and checks it when
// the test ends.
func Open(t testing.TB, root string) *cache.Store {
	t.Helper()
	s, err := cache.Open(context.Background(), root, cache.Options{LockTimeout: LockTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Check(t, s) })
	return s
}

// Check fails t for every problem Verify finds in s and for every
// between-tests invariant (see the package doc) s breaks.
func Check(t testing.TB, s *cache.Store) {
	t.Helper()
	rep, err := s.Verify(context.Background(), nil, false)
	if err != nil {
		t.Errorf("store check: verify: %v", err)
		return
	}
	for _, p := range rep.Problems {
		t.Errorf("store check: %s", p)
	}
	CheckIdle(t, s)
	if len(rep.Problems) == 0 { // the link checks read trees verify found sound
		checkLinks(t, s)
	}
}

// CheckIdle fails t unless no staging and no lease is left: what a test
// checks after a step that failed, as well as at its end.
func CheckIdle(t testing.TB, s *cache.Store) {
	t.Helper()
	ents, err := os.ReadDir(s.TmpDir())
	if err != nil {
		t.Errorf("store check: %v", err)
	}
	for _, e := range ents {
		t.Errorf("store check: left in tmp/: %s", e.Name())
	}
	var leases []index.Lease
	if err := s.View(func(tx *index.Tx) (err error) { leases, err = tx.Leases(); return err }); err != nil {
		t.Errorf("store check: leases: %v", err)
	}
	if len(leases) > 0 {
		t.Errorf("store check: leases left: %+v", leases)
	}
}

// checkLinks: every object a manifest names exists, and every regular
// file of a tree (of a stack's layer directories) with more than one
// link is an object or has all its links in the tree (a hard link of the
// archive).
func checkLinks(t testing.TB, s *cache.Store) {
	t.Helper()
	objects := map[uint64]bool{}
	dir := filepath.Join(s.Root(), "objects", "sha256")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if st, err := lstat(filepath.Join(dir, e.Name())); err == nil {
			objects[st.Ino] = true
		}
	}
	var trees []index.Tree
	if err := s.View(func(tx *index.Tx) (err error) { trees, err = tx.Trees(); return err }); err != nil {
		t.Errorf("store check: trees: %v", err)
		return
	}
	for _, tr := range trees {
		for _, obj := range ManifestObjects(t, s, tr.Digest) {
			if _, err := os.Lstat(s.ObjectPath(obj)); err != nil {
				t.Errorf("store check: tree %s names object %s: %v", tr.Digest, obj, err)
			}
		}
		// A stack's files are in its layer directories.
		dirs := []string{s.TreePath(tr.Digest)}
		if len(tr.Stack) > 0 {
			dirs = nil
			for _, c := range tr.Stack {
				dirs = append(dirs, s.LayerDirPath(c))
			}
		}
		links, nlink := map[uint64]uint64{}, map[uint64]uint64{}
		for _, dir := range dirs {
			err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
				if err != nil || !e.Type().IsRegular() {
					return err
				}
				st, err := lstat(p)
				if err != nil {
					return err
				}
				links[st.Ino]++
				nlink[st.Ino] = uint64(st.Nlink)
				return nil
			})
			if err != nil {
				t.Errorf("store check: tree %s: %v", tr.Digest, err)
			}
		}
		for ino, n := range nlink {
			if n > 1 && !objects[ino] && links[ino] != n {
				t.Errorf("store check: tree %s: inode %d has %d links, %d in the tree, and is no object", tr.Digest, ino, n, links[ino])
			}
		}
	}
}

// ManifestObjects lists the objects tree d's manifest names (non-empty
// regular files only: empty files are made in the tree, not linked).
func ManifestObjects(t testing.TB, s *cache.Store, d digest.Digest) []digest.Digest {
	t.Helper()
	f, err := s.OpenManifest(d)
	if err != nil {
		t.Fatalf("manifest %s: %v", d, err)
	}
	defer f.Close()
	var out []digest.Digest
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		me, err := cache.ParseManifestLine(sc.Text())
		if err != nil {
			t.Fatalf("manifest %s: %v", d, err)
		}
		if me.Kind == cache.KindFile && me.Size > 0 {
			out = append(out, me.Object)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("manifest %s: %v", d, err)
	}
	return out
}

func lstat(p string) (*syscall.Stat_t, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	return fi.Sys().(*syscall.Stat_t), nil
}

// File is one archive entry: a regular file with Content, or a hard link
// to an earlier entry when Link is set.
type File struct {
	Name, Content, Link string
}

// Mtime is the modification time of every entry Archive writes.
var Mtime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Archive builds a rootfs tar stream of files, each parent directory
// (mode 0755) before its children.
func Archive(t testing.TB, files ...File) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var ds []string
	for _, f := range files {
		for dir := filepath.Dir(f.Name); dir != "." && !dirs[dir]; dir = filepath.Dir(dir) {
			dirs[dir] = true
			ds = append(ds, dir)
		}
	}
	sort.Strings(ds) // a parent sorts before its children
	for _, d := range ds {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: Mtime}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Mode: 0o644, Size: int64(len(f.Content)), ModTime: Mtime}
		if f.Link != "" {
			hdr = &tar.Header{Typeflag: tar.TypeLink, Name: f.Name, Linkname: f.Link, ModTime: Mtime}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.Content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Import imports Archive(files) into s as a tree for ref ("" for none),
// as `import --tar` does (a one-layer stack), and returns the tree's
// digest.
func Import(t testing.TB, s *cache.Store, ref string, files ...File) digest.Digest {
	t.Helper()
	tr, err := snapshot.ImportTar(context.Background(), s, bytes.NewReader(Archive(t, files...)), ref)
	if err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	return tr.Digest
}

// Tree returns a directory that shows tree d of s as a container would
// see it: a plain tree's own directory, or for a stack its layer
// directories mounted read-only with overlayfs (as run mounts them) at a
// new directory, unmounted when the test ends. A stack needs root; the
// test is skipped without it.
func Tree(t testing.TB, s *cache.Store, d digest.Digest) string {
	t.Helper()
	dir, lowers, ok, err := s.StackOf(d)
	if err != nil {
		t.Fatalf("tree %s: %v", d, err)
	}
	if !ok {
		return dir
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a stack needs root")
	}
	// Not t.TempDir(): a test's name may hold a comma, which overlayfs
	// options cannot carry.
	base, err := os.MkdirTemp("", "stack-")
	if err != nil {
		t.Fatal(err)
	}
	mnt, empty, alias := filepath.Join(base, "mnt"), filepath.Join(base, "empty"), filepath.Join(base, "stack")
	for _, p := range []string{mnt, empty} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The stack by a name without the test's: the kernel resolves it.
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	if err := fsys.MountOverlay(mnt, fsys.Overlay{Dir: alias, Lower: lowers, Empty: empty}); err != nil {
		os.RemoveAll(base)
		t.Fatalf("tree %s: %v", d, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
		os.RemoveAll(base)
	})
	return mnt
}

// ImportPlain imports files into s as a plain tree, the form every tree
// had before stacks (a store written by an earlier release), for ref
// ("" for none), and returns its digest: the sha256 of Archive(files),
// as an import of that archive would name it.
func ImportPlain(t testing.TB, s *cache.Store, ref string, files ...File) digest.Digest {
	t.Helper()
	ctx := context.Background()
	d := digest.FromBytes(Archive(t, files...))
	b, err := s.NewBuilder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	dirs := map[string]bool{}
	for _, f := range files {
		var parents []string
		for dir := filepath.Dir(f.Name); dir != "." && !dirs[dir]; dir = filepath.Dir(dir) {
			dirs[dir] = true
			parents = append([]string{dir}, parents...)
		}
		for _, dir := range parents {
			if err := b.Add(cache.Entry{Name: dir, Kind: cache.KindDir, Mode: 0o755, ModTime: Mtime}, nil); err != nil {
				t.Fatal(err)
			}
		}
		e := cache.Entry{Name: f.Name, Kind: cache.KindFile, Mode: 0o644, ModTime: Mtime, Size: int64(len(f.Content))}
		if f.Link != "" {
			e = cache.Entry{Name: f.Name, Kind: cache.KindHardlink, Linkname: f.Link, ModTime: Mtime}
		}
		if err := b.Add(e, strings.NewReader(f.Content)); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if _, err := b.Commit(ctx, d, refsOf(ref)); err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	return d
}

func refsOf(ref string) []string {
	if ref == "" {
		return nil
	}
	return []string{ref}
}
