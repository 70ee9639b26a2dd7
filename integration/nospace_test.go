package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// The out-of-space tests put the store on an ext4 of their own, copy one
// prepared image of it for every point, and fill the copy until exactly k
// blocks are free.

const fsSize = 64 << 20

// loopFS is a mounted ext4 image.
type loopFS struct {
	t             *testing.T
	img, dev, dir string
}

func needLoop(t *testing.T) {
	t.Helper()
	for _, c := range []string{"mkfs.ext4", "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is missing: %v", c, err)
		}
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// makeFS creates an empty ext4 image at img: no journal and no blocks
// reserved for root, so free space is plain to count.
func makeFS(t *testing.T, img string) {
	t.Helper()
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(fsSize)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-O", "^has_journal", img)
}

// mountFS mounts img at a new directory; umount and losetup -d run in
// t.Cleanup, whatever happens, unless unmount ran first.
func mountFS(t *testing.T, img string) *loopFS {
	t.Helper()
	l := &loopFS{t: t, img: img, dir: filepath.Join(t.TempDir(), "mnt")}
	if err := os.Mkdir(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l.dev = sh(t, "losetup", "--find", "--show", img)
	t.Cleanup(l.unmount)
	sh(t, "blockdev", "--flushbufs", l.dev) // nothing cached from the device's previous image
	if out, err := exec.Command("mount", l.dev, l.dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", l.dev, err, out)
	}
	// Loop devices are shared with everything else on the machine.
	if back := sh(t, "losetup", "--list", "--noheadings", "-O", "BACK-FILE", l.dev); back != img {
		t.Fatalf("%s is backed by %q, not %s: another user of loop devices took it", l.dev, back, img)
	}
	return l
}

func (l *loopFS) unmount() {
	if l.dev == "" {
		return
	}
	if out, err := exec.Command("umount", l.dir).CombinedOutput(); err != nil {
		l.t.Errorf("umount %s: %v\n%s", l.dir, err, out)
	}
	if out, err := exec.Command("losetup", "-d", l.dev).CombinedOutput(); err != nil {
		l.t.Errorf("losetup -d %s: %v\n%s", l.dev, err, out)
	}
	// losetup -d only marks a device still open for release. Any process
	// that made a mount namespace while the image was mounted (a container
	// of another test; this host's / is private, so unmounts do not reach
	// such copies) holds it until it exits. Give it a moment, then go on:
	// no image file is ever reused, so a lingering device cannot write into
	// one that is in use.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("losetup", "--list", "--noheadings", "-O", "BACK-FILE", l.dev).Output()
		if strings.TrimSpace(string(out)) != l.img {
			break
		}
		if time.Now().After(deadline) {
			l.t.Logf("%s still holds %s after losetup -d (another mount namespace has it)", l.dev, l.img)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.dev = ""
	// The image is copied next: all of it on disk first.
	if f, err := os.OpenFile(l.img, os.O_RDWR, 0); err == nil {
		f.Sync()
		f.Close()
	}
}

// free is the number of blocks an unprivileged-or-not writer can still
// allocate, and the block size.
func (l *loopFS) free(t *testing.T) (int64, int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(l.dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail), st.Bsize
}

// fill leaves exactly k blocks free, with filler files outside the store.
// Each round allocates most of what is left over the target: a large file
// needs extent blocks of its own, which the next round sees.
func (l *loopFS) fill(t *testing.T, k int64) {
	t.Helper()
	for i := 0; ; i++ {
		avail, bs := l.free(t)
		if avail == k {
			return
		}
		if avail < k || i == 20 {
			t.Fatalf("fill to %d free blocks: %d free after %d rounds", k, avail, i)
		}
		f, err := os.Create(filepath.Join(l.dir, fmt.Sprintf("filler-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		n := avail - k
		if n > 16 {
			n -= n/128 + 8
		}
		err = syscall.Fallocate(int(f.Fd()), 0, 0, n*bs)
		f.Close()
		if err != nil {
			t.Fatalf("fallocate %d blocks with %d free: %v", n, avail, err)
		}
	}
}

func (l *loopFS) unfill(t *testing.T) {
	t.Helper()
	fillers, _ := filepath.Glob(filepath.Join(l.dir, "filler-*"))
	for _, f := range fillers {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
}

// storeOn is a store at dir, checked for consistency by the caller (the
// file system under it goes away before t.Cleanup runs).
func storeOn(t *testing.T, dir string) *store {
	return &store{t: t, root: dir}
}

type genJSON struct {
	Generation uint64 `json:"generation"`
	Digest     string `json:"digest"`
	Current    bool   `json:"current"`
}

func (s *store) history(name string) []genJSON {
	s.t.Helper()
	var out []genJSON
	if err := json.Unmarshal([]byte(s.ok("history", name, "--json")), &out); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// linked is the digest machines/NAME/current names.
func (s *store) linked(name string) string {
	s.t.Helper()
	target, err := os.Readlink(filepath.Join(s.root, "machines", name, "current"))
	if err != nil {
		s.t.Fatal(err)
	}
	return filepath.Base(filepath.Dir(target)) + ":" + filepath.Base(target)
}

// agree asserts that the index's current generation of name is the tree
// its link names, and returns that digest and the generations.
func (s *store) agree(name string) (string, []genJSON) {
	s.t.Helper()
	link := s.linked(name)
	gens := s.history(name)
	var cur []genJSON
	for _, g := range gens {
		if g.Current {
			cur = append(cur, g)
		}
	}
	if len(cur) != 1 || cur[0].Digest != link {
		s.t.Errorf("machine %s: current links to %s, the index's current generation is %+v", name, link, cur)
	}
	return link, gens
}

// oneLineNoSpace asserts r is a failure of exit 1 whose error is one line
// naming every string in mention and "no space left on device"; the lines
// before it may only be log records.
func oneLineNoSpace(t *testing.T, what string, r result, mention ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	if r.code != 1 || !strings.HasPrefix(last, "rootswap: ") {
		t.Errorf("%s: exit %d, want 1 and an error line:\n%s", what, r.code, r.stderr)
		return
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "level=") {
			t.Errorf("%s: the error takes more than one line:\n%s", what, r.stderr)
		}
	}
	for _, m := range append(mention, "no space left on device") {
		if !strings.Contains(last, m) {
			t.Errorf("%s: error %q does not mention %q", what, last, m)
		}
	}
}

// pointImage is a path for one point's image, never used before: an image
// file is never rewritten in place after a loop device had it.
func pointImage(t *testing.T) string {
	return filepath.Join(t.TempDir(), "point.img")
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	sh(t, "cp", "--sparse=always", src, dst)
}

// TestPrepareOnAFullDisk runs `prepare app v2` over an activated v1 with k
// blocks free, for every k from none to what the import and activation
// need (densely where the small writes are, at both ends, and through the
// big objects in between). Each run succeeds fully or fails with one
// clear line and leaves v1 running, the index agreeing with the link, the
// store verifying; with the space back, prepare succeeds.
func TestPrepareOnAFullDisk(t *testing.T) {
	needIntegration(t)
	needLoop(t)
	v1, v2 := testimage.Images(t)
	work := t.TempDir()
	base := filepath.Join(work, "base.img")
	makeFS(t, base)
	l := mountFS(t, base)
	s := storeOn(t, filepath.Join(l.dir, "store"))
	s.ok("prepare", "app", v1)
	d1, gens0 := s.agree("app")
	tree1 := s.stored(d1)
	s.check()
	l.unmount()

	// How many blocks a successful prepare takes.
	img := filepath.Join(work, "point.img")
	copyFile(t, base, img)
	l = mountFS(t, img)
	s = storeOn(t, filepath.Join(l.dir, "store"))
	before, bs := l.free(t)
	s.ok("prepare", "app", v2)
	after, _ := l.free(t)
	d2, _ := s.agree("app")
	l.unmount()
	need := before - after
	t.Logf("prepare %s takes %d blocks of %d bytes", v2, need, bs)
	if need < 16 {
		t.Fatalf("prepare of v2 took %d blocks: the measurement is wrong", need)
	}

	// Every block at both ends (lease, staging, first entries; the last
	// entries, the manifest, the tree record, the link, the generation),
	// and 12 points through the objects between, which all fail alike.
	points := map[int64]bool{}
	for k := int64(0); k <= 16; k++ {
		points[k] = true
	}
	for k := max(need-16, 0); k <= need+4; k++ {
		points[k] = true
	}
	for i := int64(1); i < 12; i++ {
		points[i*need/12] = true
	}
	var ks []int64
	for k := range points {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })

	var ok, failedImport, failedActivation int
	for _, k := range ks {
		if t.Failed() {
			break // one broken point explains the rest
		}
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			img := pointImage(t)
			copyFile(t, base, img)
			l := mountFS(t, img)
			defer l.unmount()
			s := storeOn(t, filepath.Join(l.dir, "store"))
			l.fill(t, k)
			r := s.run("prepare", "app", v2)
			cur, gens := s.agree("app")
			if r.code == 0 {
				ok++
				if cur != d2 || len(gens) != len(gens0)+1 {
					t.Errorf("prepare succeeded with %d blocks free, but current is %s with %d generations, want %s with %d",
						k, cur, len(gens), d2, len(gens0)+1)
				}
			} else {
				oneLineNoSpace(t, fmt.Sprintf("prepare with %d blocks free", k), r, "app", v2, d1)
				if cur != d1 {
					t.Errorf("failed prepare left current at %s, want %s", cur, d1)
				}
				if got := s.stored(d1); !reflect.DeepEqual(got, tree1) {
					t.Errorf("failed prepare changed v1's tree")
				}
				if _, err := os.Stat(s.treePath(d2)); err == nil {
					failedActivation++
				} else {
					failedImport++
				}
			}
			s.ok("verify")
			l.unfill(t)
			s.ok("prepare", "app", v2)
			cur, gens2 := s.agree("app")
			if cur != d2 || (r.code != 0 && len(gens2) <= len(gens)) {
				t.Errorf("prepare with space again: current %s, %d generations (before: %d), want %s and a new generation", cur, len(gens2), len(gens), d2)
			}
			s.ok("verify")
			s.check()
		})
	}
	t.Logf("%d points: %d succeeded, %d failed in the import, %d in the activation", len(ks), ok, failedImport, failedActivation)
	// Whether the activation of a prepare can run out of space depends on
	// what the import freed; TestRollbackAndActivateOnAFullDisk seeks out
	// the activations that need space.
	if ok == 0 || failedImport == 0 {
		t.Errorf("the points missed an outcome: %d succeeded, %d failed in the import, %d in the activation", ok, failedImport, failedActivation)
	}
}

// indexBlocks is how many blocks index.db has allocated.
func (s *store) indexBlocks() int64 {
	s.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(s.root, "index.db"), &st); err != nil {
		s.t.Fatal(err)
	}
	return st.Blocks
}

// TestRollbackAndActivateOnAFullDisk flips between two imported trees
// with none up to a few dozen blocks free. Most index commits reuse pages
// bbolt already has, so there only the link can run out of space; the
// states where the next commit must grow the index (measured: index.db
// gains blocks) are where it can fail after the link was made, and get
// the same sweep.
func TestRollbackAndActivateOnAFullDisk(t *testing.T) {
	needIntegration(t)
	needLoop(t)
	v1, v2 := testimage.Images(t)
	work := t.TempDir()
	base := filepath.Join(work, "base.img")
	makeFS(t, base)
	l := mountFS(t, base)
	s := storeOn(t, filepath.Join(l.dir, "store"))
	s.ok("prepare", "app", v1)
	d1, _ := s.agree("app")
	s.ok("prepare", "app", v2)
	d2, _ := s.agree("app")
	s.check()
	l.unmount()

	// Flip back and forth on a copy; keep the states whose flip grew the
	// index.
	other := map[string]string{d1: d2, d2: d1}
	bases := []string{base}
	// Each step mounts a fresh copy of the last state (no image is mounted
	// twice: see unmount), so the state before a step stays as it was.
	cur := filepath.Join(work, "walk-0.img")
	copyFile(t, base, cur)
	for i := 0; i < 120 && len(bases) < 4; i++ {
		next := filepath.Join(work, fmt.Sprintf("walk-%d.img", i+1))
		copyFile(t, cur, next)
		l := mountFS(t, next)
		s := storeOn(t, filepath.Join(l.dir, "store"))
		before := s.indexBlocks()
		s.ok("activate", "app", other[s.linked("app")])
		grew := s.indexBlocks() > before
		l.unmount()
		if grew {
			bases = append(bases, cur)
		} else {
			os.Remove(cur)
		}
		cur = next
	}
	t.Logf("%d states where activate grows the index", len(bases)-1)
	if len(bases) == 1 {
		t.Errorf("120 activations never grew the index: the sweep misses the index commit")
	}

	outcomes := map[string]int{}
	for bi, b := range bases {
		for _, cmd := range []string{"rollback", "activate"} {
			for k := int64(0); k <= 16 && !t.Failed(); k++ {
				t.Run(fmt.Sprintf("%d/%s/%d", bi, cmd, k), func(t *testing.T) {
					img := pointImage(t)
					copyFile(t, b, img)
					l := mountFS(t, img)
					defer l.unmount()
					s := storeOn(t, filepath.Join(l.dir, "store"))
					was, gens0 := s.agree("app")
					want := other[was]
					args := []string{"rollback", "app"}
					if cmd == "activate" {
						args = []string{"activate", "app", want}
					}
					l.fill(t, k)
					r := s.run(args...)
					cur, gens := s.agree("app")
					if r.code == 0 {
						outcomes[cmd+" succeeded"]++
						if cur != want {
							t.Errorf("%s succeeded with %d blocks free, current is %s, want %s", cmd, k, cur, want)
						}
					} else {
						outcomes[cmd+" failed"]++
						oneLineNoSpace(t, fmt.Sprintf("%s with %d blocks free", cmd, k), r, "app", was)
						if cur != was || len(gens) != len(gens0) {
							t.Errorf("failed %s left current at %s with %d generations, want %s with %d", cmd, cur, len(gens), was, len(gens0))
						}
					}
					s.ok("verify")
					l.unfill(t)
					if r.code != 0 {
						s.ok(args...)
					}
					if cur, _ := s.agree("app"); cur != want {
						t.Errorf("%s with space again: current %s, want %s", cmd, cur, want)
					}
					s.ok("verify")
					s.check()
				})
			}
		}
	}
	t.Logf("outcomes: %v", outcomes)
	for _, o := range []string{"rollback succeeded", "rollback failed", "activate succeeded", "activate failed"} {
		if outcomes[o] == 0 && !t.Failed() {
			t.Errorf("no point where %s: %v", o, outcomes)
		}
	}
}
