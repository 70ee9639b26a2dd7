package testimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

func TestRootfsDeterministic(t *testing.T) {
	a, err := os.ReadFile(Rootfs(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(Rootfs(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("two Rootfs calls differ (%d and %d bytes)", len(a), len(b))
	}
}

func TestRootfsContents(t *testing.T) {
	f, err := os.Open(Rootfs(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdrs := map[string]*tar.Header{}
	bodies := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if _, dup := hdrs[name]; dup {
			t.Errorf("%s: twice in the archive", name)
		}
		hdrs[name] = h
		if bodies[name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", name, h.ModTime, mtime)
		}
	}
	want := func(name string, typ byte, mode int64) *tar.Header {
		t.Helper()
		h, ok := hdrs[name]
		switch {
		case !ok:
			t.Errorf("%s: missing", name)
			return &tar.Header{}
		case h.Typeflag != typ:
			t.Errorf("%s: type %q, want %q", name, h.Typeflag, typ)
		case mode >= 0 && h.Mode != mode:
			t.Errorf("%s: mode %o, want %o", name, h.Mode, mode)
		}
		return h
	}
	for _, d := range []string{"bin", "etc", "usr/bin", "var/lib/empties"} {
		want(d, tar.TypeDir, 0o755)
	}
	if h := want("home/user", tar.TypeDir, 0o750); h.Uid != 1000 || h.Gid != 1000 {
		t.Errorf("home/user owned by %d:%d, want 1000:1000", h.Uid, h.Gid)
	}
	want("tmp", tar.TypeDir, 0o1777)
	want("root", tar.TypeDir, 0o700)
	want("var/empty", tar.TypeDir, 0o555)
	want("var/empty/keep", tar.TypeReg, -1)
	want("bin/busybox", tar.TypeReg, 0o755)
	for _, a := range applets {
		if h := want("bin/"+a, tar.TypeSymlink, -1); h.Linkname != "busybox" && h.Linkname != Busybox {
			t.Errorf("bin/%s -> %s, want busybox", a, h.Linkname)
		}
	}
	if h := want("etc/mtab", tar.TypeSymlink, -1); h.Linkname != "/proc/mounts" {
		t.Errorf("etc/mtab -> %s", h.Linkname)
	}
	want("etc/passwd", tar.TypeReg, 0o644)
	want("etc/group", tar.TypeReg, 0o644)
	if got := string(bodies["etc/rootswap-version"]); got != "v1\n" {
		t.Errorf("etc/rootswap-version = %q", got)
	}
	want("usr/bin/suid", tar.TypeReg, 0o4755)
	want("usr/bin/sgid", tar.TypeReg, 0o2755)
	if h := want("usr/bin/capfile", tar.TypeReg, 0o755); h.PAXRecords["SCHILY.xattr.security.capability"] != capNetBindService {
		t.Errorf("usr/bin/capfile: PAX records %q", h.PAXRecords)
	}
	if len(capNetBindService) != 20 || capNetBindService[0] != 1 || capNetBindService[3] != 2 || capNetBindService[5] != 0x04 {
		t.Errorf("capability blob % x", capNetBindService)
	}
	want("usr/bin/hl-a", tar.TypeReg, 0o644)
	if h := want("usr/bin/hl-b", tar.TypeLink, 0o644); h.Linkname != "usr/bin/hl-a" {
		t.Errorf("usr/bin/hl-b links to %s", h.Linkname)
	}
	owners := map[int]bool{}
	for _, h := range hdrs {
		owners[h.Uid] = true
	}
	if !owners[1000] || !owners[65534] {
		t.Errorf("owners %v: want entries owned by 1000 and 65534", owners)
	}
	empties := 0
	for name, h := range hdrs {
		if strings.HasPrefix(name, "var/lib/empties/") && h.Typeflag == tar.TypeReg && h.Size == 0 {
			empties++
		}
	}
	if empties != 200 {
		t.Errorf("%d empty files in var/lib/empties, want 200", empties)
	}
	random := 0
	for _, n := range []string{"var/lib/random/a.bin", "var/lib/random/b.bin"} {
		random += len(bodies[n])
	}
	if random < 2<<20 {
		t.Errorf("%d bytes of random data, want a few MB", random)
	}
}

// TestImages needs Docker: with ROOTSWAP_INTEGRATION=1 an unreachable
// daemon fails the test.
func TestImages(t *testing.T) {
	if os.Getenv("ROOTSWAP_INTEGRATION") != "1" {
		t.Skip("ROOTSWAP_INTEGRATION=1 not set (make test sets it)")
	}
	v1, v2 := Images(t)
	id1, id2 := ImageID(t, v1), ImageID(t, v2)
	t.Logf("v1 %s = %s, v2 %s = %s", v1, id1, v2, id2)
	for _, id := range []string{id1, id2} {
		if !strings.HasPrefix(id, "sha256:") || len(id) != len("sha256:")+64 {
			t.Errorf("image ID %q is not sha256:<64 hex>", id)
		}
	}
	if id1 == id2 {
		t.Errorf("v1 and v2 have the same ID %s", id1)
	}
	// A second call reuses the same images.
	if a, b := Images(t); a != v1 || b != v2 {
		t.Errorf("second Images() = %s, %s; want %s, %s", a, b, v1, v2)
	}
}
