package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// exportOnly are the paths Docker's init layer (daemon/initlayer) creates
// in every container when the image lacks them, so `docker export`, and
// a tree imported from it, may hold them while the image does not: the
// layers a registry serves never do. The init layer creates each only if
// it is missing, so where the image has one of them, the two trees must
// agree on it like on any other path. Creating them changes the mtime of
// their parent directories (and of the root), so those mtimes are not
// compared either.
var exportOnly = map[string]bool{
	".dockerenv": true, "etc/hosts": true, "etc/hostname": true, "etc/resolv.conf": true, "etc/mtab": true,
	"dev": true, "dev/console": true, "dev/pts": true, "dev/shm": true, "proc": true, "sys": true,
}

// exportOnlyParents are the directories whose mtime the init layer sets.
var exportOnlyParents = map[string]bool{".": true, "etc": true, "dev": true}

// treeDiff compares tree got with tree want entry by entry, as
// TestFidelity compares a tree with an export (type and mode, owner,
// symlink target, size, content, security.capability, mtime except of
// symlinks), plus device numbers and hard links. fromExport says
// want came through `docker export`: then exportOnly paths may be in want
// alone, and their mtimes and exportOnlyParents' are not compared. It returns one
// line per difference.
func treeDiff(t *testing.T, gotRoot, wantRoot string, fromExport bool) []string {
	t.Helper()
	got, want := describe(t, gotRoot), describe(t, wantRoot)
	var diffs []string
	for _, p := range slices.Sorted(maps.Keys(want)) {
		w := want[p]
		g, ok := got[p]
		if !ok {
			if !(fromExport && exportOnly[p]) {
				diffs = append(diffs, fmt.Sprintf("%s: missing, want %+v", p, w))
			}
			continue
		}
		if g.mode != w.mode || g.uid != w.uid || g.gid != w.gid || g.link != w.link ||
			g.size != w.size || g.content != w.content || g.caps != w.caps {
			diffs = append(diffs, fmt.Sprintf("%s: %+v, want %+v", p, g, w))
		}
		if g.mtime != w.mtime && g.mode&os.ModeSymlink == 0 && !(fromExport && (exportOnly[p] || exportOnlyParents[p])) && p != "." {
			diffs = append(diffs, fmt.Sprintf("%s: mtime %d, want %d", p, g.mtime, w.mtime))
		}
		if w.mode&fs.ModeDevice != 0 {
			if gr, wr := rdev(t, filepath.Join(gotRoot, p)), rdev(t, filepath.Join(wantRoot, p)); gr != wr {
				diffs = append(diffs, fmt.Sprintf("%s: device %#x, want %#x", p, gr, wr))
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: not in the other tree: %+v", p, got[p]))
		}
	}
	// Hard links: paths that are one inode in want are one inode in got.
	// Not the converse: the store links identical files (same content and
	// metadata) to one object, so got may join paths want keeps apart.
	first := map[uint64]string{}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		w := want[p]
		if !w.mode.IsRegular() {
			continue
		}
		f, ok := first[w.ino]
		if !ok {
			first[w.ino] = p
			continue
		}
		if g, gf := got[p], got[f]; g.mode.IsRegular() && gf.mode.IsRegular() && g.ino != gf.ino {
			diffs = append(diffs, fmt.Sprintf("%s: not hard-linked with %s", p, f))
		}
	}
	return diffs
}

func rdev(t *testing.T, p string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Rdev
}

// requireSame fails the test with every difference treeDiff finds.
func requireSame(t *testing.T, what, gotRoot, wantRoot string, fromExport bool) {
	t.Helper()
	diffs := treeDiff(t, gotRoot, wantRoot, fromExport)
	if len(diffs) > 0 {
		t.Fatalf("%s: %d differences:\n  %s", what, len(diffs), strings.Join(diffs, "\n  "))
	}
	t.Logf("%s: %d entries, identical", what, len(describe(t, gotRoot)))
}

// importOne imports src into a fresh store and returns the store and the
// digest import printed.
func importOne(t *testing.T, src string, env ...string) (*store, string) {
	t.Helper()
	s := newStore(t)
	s.env = env
	return s, strings.TrimSpace(s.ok("import", src))
}

// TestPullFidelity: for each test image (v1: one layer from docker
// import; v2: v1 and a COPY and a RUN; the layers image with every layer
// case, gzip and zstd), the tree pulled from the registry
// (docker://HOST/REPO:TAG) has the image's config digest, Docker's image
// ID, as its key, and equals entry by entry the tree imported through the
// daemon (bare REPO:TAG, docker export), the tree of an OCI layout
// (oci:PATH:TAG) and the tree of `docker save` (docker-archive:PATH).
// Each comes from a store of its own: in one store the second import of
// the same image would be a cache hit, not a second tree. Each tree is
// compared as run shows it (store.view: a stack mounted as its layers'
// overlay).
func TestPullFidelity(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	layers := layersImage(t)
	reg := startRegistry(t, registryOpts{})
	for _, local := range []string{v1, v2, layers} {
		t.Run(local, func(t *testing.T) {
			id := testimage.ImageID(t, local)
			remoteRef := pushImageAs(t, reg, local, strings.ReplaceAll(local, "rootswap-test/", "rootswap-test/fidelity-"))
			img := remoteImage(t, remoteRef)

			sReg, dReg := importOne(t, "docker://"+remoteRef)
			if dReg != id {
				t.Fatalf("import docker://%s printed %s, want the image ID %s", remoteRef, dReg, id)
			}
			sDaemon, dDaemon := importOne(t, local)
			if dDaemon != id {
				t.Fatalf("import %s (the daemon) printed %s, want %s", local, dDaemon, id)
			}
			requireSame(t, "registry vs daemon export", sReg.view(dReg), sDaemon.view(dDaemon), true)
			requireSame(t, "registry vs docker export", sReg.view(dReg), exportTo(t, local), true)

			sD, dD := importOne(t, "docker-daemon:"+local)
			if dD != id {
				t.Fatalf("import docker-daemon:%s printed %s, want %s", local, dD, id)
			}
			// Both are exports, each with its own init layer.
			requireSame(t, "docker-daemon: vs bare REPO:TAG", sD.view(dD), sDaemon.view(dDaemon), true)

			oci := writeOCILayout(t, img, "fidelity")
			sOCI, dOCI := importOne(t, "oci:"+oci+":fidelity")
			if dOCI != id {
				t.Fatalf("import oci:%s:fidelity printed %s, want %s", oci, dOCI, id)
			}
			requireSame(t, "oci layout vs registry", sOCI.view(dOCI), sReg.view(dReg), false)

			archive := dockerSave(t, local)
			sArc, dArc := importOne(t, "docker-archive:"+archive)
			if dArc != id {
				t.Fatalf("import docker-archive:%s printed %s, want %s", archive, dArc, id)
			}
			requireSame(t, "docker-archive vs registry", sArc.view(dArc), sReg.view(dReg), false)

			if local != layers {
				return
			}
			zref := pushZstd(t, reg, img, "rootswap-test/fidelity-layers:zstd")
			sZ, dZ := importOne(t, "docker://"+zref)
			if dZ != id {
				t.Fatalf("import docker://%s (zstd layers, the same config) printed %s, want %s", zref, dZ, id)
			}
			requireSame(t, "zstd layers vs gzip layers", sZ.view(dZ), sReg.view(dReg), false)
			// By digest: the manifest the tag names, pinned.
			zdesc := remoteDigest(t, zref)
			sZD, dZD := importOne(t, "docker://"+reg.Addr()+"/rootswap-test/fidelity-layers@"+zdesc)
			if dZD != id {
				t.Fatalf("import by manifest digest %s printed %s, want %s", zdesc, dZD, id)
			}
			requireSame(t, "by digest vs by tag", sZD.view(dZD), sZ.view(dZ), false)
			// The cases the layers image exists for, as the merged tree has them.
			tree := sReg.view(dReg)
			for p, want := range map[string]string{
				"srv/hl/one": "shared\n", "srv/hl/three": "shared\n", "srv/hl/four": "shared\n", "srv/hl/two": "rewritten\n",
				"srv/opq/new": "new\n", "srv/del/keep": "keep\n", "srv/filetodir/child": "child\n", "srv/dirtofile": "now-a-file\n",
			} {
				if b, err := os.ReadFile(filepath.Join(tree, p)); err != nil || string(b) != want {
					t.Errorf("%s: %q %v, want %q", p, b, err, want)
				}
			}
			for _, p := range []string{"srv/del/gone", "srv/opq/old1", "srv/opq/sub", "etc/rootswap-obsolete", "srv/dirtofile/sub"} {
				// ENOTDIR: a parent is a file now, which is removal too.
				if _, err := os.Lstat(filepath.Join(tree, p)); !os.IsNotExist(err) && !errors.Is(err, syscall.ENOTDIR) {
					t.Errorf("%s: a lower layer's entry the image removed is in the tree (%v)", p, err)
				}
			}
			if l, err := os.Readlink(filepath.Join(tree, "srv/todir")); err != nil || l != "del" {
				t.Errorf("srv/todir: %q %v, want a symlink to del", l, err)
			}
		})
	}
}

// remoteDigest is the digest of the manifest ref names now.
func remoteDigest(t *testing.T, ref string) string {
	t.Helper()
	img := remoteImage(t, ref)
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestPullTreeDiff checks the comparison the pull fidelity tests rest on,
// with today's daemon path: the layers image imported through the daemon
// equals its `docker export` under treeDiff's export rules, and treeDiff
// reports each kind of difference it claims to see (content, mode, a
// broken hard link, a missing path, an extra path, a device number).
func TestPullTreeDiff(t *testing.T) {
	needIntegration(t)
	layers := layersImage(t)
	s, d := importOne(t, layers)
	ref := exportTo(t, layers)
	requireSame(t, "daemon tree vs docker export", s.view(d), ref, true)

	for _, c := range []struct {
		what   string
		damage func(root string) error
		want   string
		swap   bool // compare the damaged copy against the tree
	}{
		{"content", func(r string) error { return os.WriteFile(filepath.Join(r, "srv/opq/new"), []byte("nex\n"), 0o644) }, "srv/opq/new", false},
		{"mode", func(r string) error { return os.Chmod(filepath.Join(r, "srv/suid"), 0o755) }, "srv/suid", false},
		{"hard link", func(r string) error {
			p := filepath.Join(r, "srv/hl/four")
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err != nil {
				return err
			}
			if err := os.Remove(p); err != nil {
				return err
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, timeOf(st.Mtim), timeOf(st.Mtim))
		}, "srv/hl/one: not hard-linked with srv/hl/four", true},
		{"missing", func(r string) error { return os.Remove(filepath.Join(r, "srv/del/keep")) }, "srv/del/keep: missing", true},
		{"extra", func(r string) error { return os.Remove(filepath.Join(r, "srv/del/keep")) }, "srv/del/keep: not in the other tree", false},
		{"device", func(r string) error {
			p := filepath.Join(r, "dev/rootswap-null")
			if err := os.Remove(p); err != nil {
				return err
			}
			return syscall.Mknod(p, syscall.S_IFCHR|0o666, 1<<8|5)
		}, "dev/rootswap-null: device", false},
	} {
		t.Run(c.what, func(t *testing.T) {
			damaged := exportTo(t, layers)
			if err := c.damage(damaged); err != nil {
				t.Fatal(err)
			}
			diffs := treeDiff(t, s.view(d), damaged, true)
			if c.swap {
				diffs = treeDiff(t, damaged, s.view(d), false)
			}
			if !slices.ContainsFunc(diffs, func(l string) bool { return strings.HasPrefix(l, c.want) }) {
				t.Fatalf("treeDiff after damaging %s: %q, want a line starting %q", c.what, diffs, c.want)
			}
		})
	}
}

func timeOf(ts syscall.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }

// exportTo extracts `docker export` of a new container of img into a new
// directory with tar (owners, xattrs and file capabilities kept) and
// returns it: the tree Docker itself would run, the oracle the fidelity
// tests compare rootswap's trees with.
func exportTo(t *testing.T, img string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("docker", "create", img, "/none").CombinedOutput()
	if err != nil {
		t.Fatalf("docker create: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	defer exec.Command("docker", "rm", "-f", id).Run()
	pipe := fmt.Sprintf("docker export %s | tar -x --same-owner --xattrs --xattrs-include='*' -C %s", id, dir)
	if out, err := exec.Command("sh", "-c", pipe).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", pipe, err, out)
	}
	return dir
}
