package cache_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// ext4Limit is ext4's hard link limit per inode.
const ext4Limit = 65000

// ext4Dir is a directory on ext4: t.TempDir() if it is one, else a small
// loop-mounted ext4 of the test's own.
func ext4Dir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == 0xEF53 { // EXT4_SUPER_MAGIC
		return dir
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil || os.Geteuid() != 0 {
		t.Skip("the link limit needs ext4: the temp dir is not, and no loop ext4 can be made here")
	}
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	for _, c := range [][]string{{"truncate", "-s", "256M", img}, {"mkfs.ext4", "-q", "-F", img}, {"mkdir", mnt}, {"mount", "-o", "loop", img, mnt}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", "-d", mnt).Run() })
	return mnt
}

// linkTar is an archive of g/f and n hard links to it, g/hl0…
func linkTar(n int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	tw.WriteHeader(&tar.Header{Name: "g/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	tw.WriteHeader(&tar.Header{Name: "g/f", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 7, Gid: 8, Size: 5, ModTime: mt,
		PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}})
	tw.Write([]byte("hello"))
	for i := 0; i < n; i++ {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("g/hl%d", i), Typeflag: tar.TypeLink, Linkname: "g/f", Mode: 0o4755, Uid: 7, Gid: 8, ModTime: mt})
	}
	tw.Close()
	return buf.Bytes()
}

// matches checks that every name in the archive is in the tree with g/f's
// content, mode, owner, mtime and xattr.
func matches(t *testing.T, root string, n int) {
	t.Helper()
	names := []string{"g/f"}
	for i := 0; i < n; i++ {
		names = append(names, fmt.Sprintf("g/hl%d", i))
	}
	want := time.Unix(1700000000, 0)
	for _, name := range names {
		p := filepath.Join(root, name)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		x := make([]byte, 16)
		xn, _ := syscall.Getxattr(p, "user.k", x)
		if st.Mode != syscall.S_IFREG|0o4755 || st.Uid != 7 || st.Gid != 8 || st.Mtim.Sec != want.Unix() || st.Size != 5 || string(x[:max(xn, 0)]) != "v" {
			t.Fatalf("%s: mode %o owner %d:%d mtime %d size %d xattr %q", name, st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Size, x[:max(xn, 0)])
		}
		if name == "g/f" || name == fmt.Sprintf("g/hl%d", n-1) {
			if b, err := os.ReadFile(p); err != nil || string(b) != "hello" {
				t.Fatalf("%s: content %q %v", name, b, err)
			}
		}
	}
}

func importAndCheck(t *testing.T, s *cache.Store, n int) {
	t.Helper()
	start := time.Now()
	tr, err := snapshot.ImportTar(context.Background(), s, bytes.NewReader(linkTar(n)), "")
	if err != nil {
		t.Fatalf("import of g/f with %d hard links: %v", n, err)
	}
	t.Logf("import of %d hard links took %s", n, time.Since(start))
	matches(t, storetest.Tree(t, s, tr.Digest), n)
	rep, err := s.Verify(context.Background(), nil, false)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("verify: %v %v", rep.Problems, err)
	}
}

func openStore(t *testing.T) *cache.Store {
	t.Helper()
	// ext4Dir's unmount is registered first, so it runs after the check.
	return storetest.Open(t, filepath.Join(ext4Dir(t), "store"))
}

// An archive may hold more hard links to one file than ext4 allows: the
// links past the limit get a copy of their own, and later ones join it.
func TestHardLinksPastTheLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 65,000 hard links")
	}
	importAndCheck(t, openStore(t), ext4Limit+10)
}

// The target's object may already be at the limit from other trees: the
// archive's own links must still import.
func TestHardLinkToAnObjectAtTheLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 65,000 hard links")
	}
	s := openStore(t)
	tr, err := snapshot.ImportTar(context.Background(), s, bytes.NewReader(linkTar(0)), "")
	if err != nil {
		t.Fatal(err)
	}
	// Other trees' links: the object ends one short of the limit, so g/f
	// still links to it and the first hard link to g/f is the one refused.
	obj := s.LayerDirPath(tr.Stack[0]) + "/g/f" // a link of the object
	others := filepath.Join(s.Root(), "others")
	if err := os.Mkdir(others, 0o755); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Stat(obj, &st)
	for i := int(st.Nlink); i < ext4Limit-1; i++ {
		if err := os.Link(obj, filepath.Join(others, fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	importAndCheck(t, s, 3)
	if err := os.RemoveAll(others); err != nil {
		t.Fatal(err)
	}
}
