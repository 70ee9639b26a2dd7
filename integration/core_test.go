package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/rootswap/rootswap/internal/testimage"
)

// Paths Docker's init layer writes into every container, so an export
// differs from the image there.
var dockerInit = map[string]bool{".dockerenv": true, "etc/hosts": true, "etc/hostname": true, "etc/resolv.conf": true}

// Directories the init layer creates or writes into: their mtime is the
// time of each docker create.
var dockerInitDirs = map[string]bool{"etc": true, "dev": true, "dev/pts": true, "dev/shm": true, "dev/console": true, "proc": true, "sys": true}

func TestImportIsKeyedByImageIDAndCached(t *testing.T) {
	needIntegration(t)
	v1 := gcImages(t, 1)[0] // its own: exports of it are this test's alone
	s := newStore(t)

	start := time.Now()
	d := strings.TrimSpace(s.ok("import", v1))
	if want := testimage.ImageID(t, v1); d != want {
		t.Fatalf("import %s printed %s, want the image ID %s", v1, d, want)
	}
	if n := exportCreates(t, start, d); n != 1 {
		t.Errorf("first import created %d containers, want 1", n)
	}
	if out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=org.rootswap.export="+d).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("containers left behind after import: %q %v", out, err)
	}

	start = time.Now()
	if again := strings.TrimSpace(s.ok("import", v1)); again != d {
		t.Fatalf("second import printed %s, want %s", again, d)
	}
	byID := strings.TrimSpace(s.ok("import", d))
	if byID != d {
		t.Fatalf("import by image ID printed %s, want %s", byID, d)
	}
	if n := exportCreates(t, start, d); n != 0 {
		t.Errorf("cached imports created %d containers, want 0", n)
	}
}

func TestPrepareCacheHitChangesNothing(t *testing.T) {
	needIntegration(t)
	v1 := gcImages(t, 1)[0] // its own: exports of it are this test's alone
	s := newStore(t)
	s.ok("prepare", "web", v1)
	before := listing(t, s.root)

	start := time.Now()
	var took []time.Duration
	for i := 0; i < 5; i++ {
		r := s.run("prepare", "web", v1)
		if r.code != 0 || !strings.Contains(r.stdout, "(unchanged)") {
			t.Fatalf("cache-hit prepare: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		took = append(took, r.took)
	}
	if n := exportCreates(t, start, testimage.ImageID(t, v1)); n != 0 {
		t.Errorf("cache-hit prepare created %d containers, want 0", n)
	}
	if after := listing(t, s.root); after != before {
		t.Errorf("cache-hit prepare changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("cache-hit prepare, median of 5 (whole process, incl. docker inspect): %s", took[2])
}

// listing describes every path under root with inode, mode, size and
// mtime: two equal listings mean nothing was written.
func listing(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "index.db" || rel == "lock" || strings.HasPrefix(rel, "locks") {
			return nil // opened (not written) on every command
		}
		if strings.HasPrefix(fi.Name(), ".#") || rel == filepath.Join("trees", "sha256") {
			return nil // systemd-nspawn locks a tree it runs with .#<hex>.lck beside it
		}
		fmt.Fprintf(&b, "%s %v %d %d\n", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestFidelity compares a tree with `docker export | tar -x --same-owner
// --xattrs` of the same image, entry by entry.
func TestFidelity(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	for _, img := range []string{v1, v2} {
		t.Run(img, func(t *testing.T) {
			s := newStore(t)
			d := strings.TrimSpace(s.ok("import", img))
			ours := describe(t, s.view(d))

			ref := exportTo(t, img)
			theirs := describe(t, ref)

			for p, want := range theirs {
				if dockerInit[p] || p == "." {
					continue
				}
				got, ok := ours[p]
				if !ok {
					t.Errorf("%s: in the export, missing from the tree", p)
					continue
				}
				if got.mode != want.mode || got.uid != want.uid || got.gid != want.gid || got.link != want.link ||
					got.size != want.size || got.content != want.content || got.caps != want.caps {
					t.Errorf("%s: tree has %+v, export has %+v", p, got, want)
				}
				if got.mtime != want.mtime && got.mode&os.ModeSymlink == 0 && !dockerInitDirs[p] {
					t.Errorf("%s: mtime %d, export has %d", p, got.mtime, want.mtime)
				}
			}
			for p := range ours {
				if _, ok := theirs[p]; !ok && !dockerInit[p] {
					t.Errorf("%s: in the tree, not in the export", p)
				}
			}
			// Every hard link group of the export is one inode in the tree.
			groups := map[uint64][]string{}
			for p, e := range theirs {
				if e.mode.IsRegular() {
					groups[e.ino] = append(groups[e.ino], p)
				}
			}
			linked := 0
			for _, g := range groups {
				for _, p := range g[1:] {
					linked++
					if ours[p].ino != ours[g[0]].ino {
						t.Errorf("%s and %s are one file in the export but not in the tree", p, g[0])
					}
				}
			}
			if linked == 0 {
				t.Errorf("the test image has no hard links: the comparison proves nothing about them")
			}
		})
	}
}

func TestUpgradeDedupeRollbackRun(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	s := newStore(t)
	d1 := strings.TrimSpace(s.ok("import", v1))
	out := s.ok("prepare", "app", v1)
	if !strings.Contains(out, "generation 1") {
		t.Fatalf("first prepare: %q", out)
	}
	out = s.ok("prepare", "app", v2)
	if !strings.Contains(out, "generation 2") {
		t.Fatalf("upgrade prepare: %q", out)
	}
	d2 := testimage.ImageID(t, v2)

	// v2 shares v1's unchanged files: the store grew by about what v2 changed.
	var im1, im2 imageJSON
	for _, im := range s.images() {
		switch im.Digest {
		case d1:
			im1 = im
		case d2:
			im2 = im
		}
	}
	changed := changedBytes(t, s.view(d1), s.view(d2))
	t.Logf("v1 %d bytes; v2 %d bytes, %d newly stored; changed or new files in v2: %d bytes", im1.Bytes, im2.Bytes, im2.NewBytes, changed)
	if im2.NewBytes > changed*11/10+4096 || im2.NewBytes < changed {
		t.Errorf("v2 stored %d new bytes, want about the %d bytes of changed files", im2.NewBytes, changed)
	}

	if got := s.ok("run", "app", "/bin/cat", "/etc/rootswap-version"); !strings.Contains(got, "v2") {
		t.Errorf("run after upgrade printed %q, want v2", got)
	}
	out = s.ok("rollback", "app")
	if !strings.Contains(out, "generation 1") {
		t.Fatalf("rollback: %q", out)
	}
	if got := s.ok("run", "app", "/bin/cat", "/etc/rootswap-version"); !strings.Contains(got, "v1") {
		t.Errorf("run after rollback printed %q, want v1", got)
	}
	s.fail(1, []string{"app", "oldest"}, "rollback", "app")
	s.ok("rollback", "app", "--to", "2")
	hist := s.ok("history", "app")
	if !strings.Contains(hist, "*  2") {
		t.Errorf("history does not mark generation 2 current:\n%s", hist)
	}

	// The container rewrites and chmods files; the store must not change.
	before := listing(t, s.root)
	sums := describe(t, s.view(d2))
	got := s.ok("run", "app", "/bin/sh", "-c",
		"echo hacked > /etc/rootswap-version; chmod 0777 /bin/busybox; rm -f /etc/passwd; touch /new; cat /etc/rootswap-version")
	if !strings.Contains(got, "hacked") {
		t.Fatalf("the container could not write its own view: %q", got)
	}
	if after := listing(t, s.root); after != before {
		t.Errorf("run changed the store")
	}
	after := describe(t, s.view(d2))
	for p, e := range sums {
		if after[p] != e {
			t.Errorf("run changed %s in the tree: %+v → %+v", p, e, after[p])
		}
	}
	if got := s.ok("run", "app", "/bin/cat", "/etc/rootswap-version"); !strings.Contains(got, "v2") {
		t.Errorf("a write survived into the next run: %q", got)
	}
}

// changedBytes is the size of regular files in tree b that are new or
// differ in content or metadata from the same path in tree a.
func changedBytes(t *testing.T, a, b string) int64 {
	ea, eb := describe(t, a), describe(t, b)
	var n int64
	for p, e := range eb {
		if !e.mode.IsRegular() || e.size == 0 {
			continue
		}
		old, ok := ea[p]
		if !ok || old.content != e.content || old.mode != e.mode || old.uid != e.uid || old.gid != e.gid || old.mtime != e.mtime {
			n += e.size
		}
	}
	return n
}

func TestDockerUnreachable(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	s := newStore(t)
	d := strings.TrimSpace(s.ok("prepare", "cached", v1))
	s.env = []string{"DOCKER_HOST=unix:///nonexistent/docker.sock"}
	r := s.run("prepare", "cached", v1)
	if r.code != 0 || !strings.Contains(r.stderr, "unreachable") {
		t.Errorf("prepare with a cached tree and no daemon: exit %d, stderr %q; want 0 and a warning", r.code, r.stderr)
	}
	if !strings.Contains(d, "generation 1") || !strings.Contains(r.stdout, "cached") {
		t.Errorf("prepare output %q / %q", d, r.stdout)
	}
	s.fail(1, []string{"unreachable", "fresh"}, "prepare", "fresh", v1)
	s.fail(1, []string{"unreachable"}, "import", v1)
}

func TestErrors(t *testing.T) {
	needIntegration(t)
	s := newStore(t)
	s.fail(2, []string{"-bad"}, "prepare", "--", "-bad", "img")
	s.fail(2, []string{"a/b"}, "activate", "a/b", "sha256:"+strings.Repeat("0", 64))
	s.fail(2, []string{strings.Repeat("x", 65)}, "history", strings.Repeat("x", 65))
	s.fail(2, []string{"sha256:xyz"}, "activate", "ok", "sha256:xyz")
	s.fail(1, []string{"no store at"}, "activate", "ok", "sha256:"+strings.Repeat("0", 64))
	s.fail(1, []string{"no-such-image:v9", "not found"}, "import", "no-such-image:v9") // creates the store
	s.fail(1, []string{"sha256:" + strings.Repeat("0", 64), "not found"}, "activate", "ok", "sha256:"+strings.Repeat("0", 64))
	s.fail(1, []string{"no-such-image:v9", "not found"}, "prepare", "m", "no-such-image:v9")
	s.fail(2, []string{"takes 2"}, "prepare", "onlyname")
	s.fail(2, []string{"unknown flag"}, "prepare", "--bogus", "a", "b")
	s.fail(1, []string{"nothing"}, "rollback", "nothing")
	if r := s.run("import", "--help"); r.code != 0 || !strings.Contains(r.stdout, "--tar") {
		t.Errorf("import --help: exit %d, %q", r.code, r.stdout)
	}
	if r := s.run("run", "--help"); r.code != 0 || !strings.Contains(r.stdout, "systemd-nspawn") {
		t.Errorf("run --help: exit %d, %q", r.code, r.stdout)
	}
}

// TestConcurrentPrepareExportsOnce: 8 units starting at once on a new image.
func TestConcurrentPrepareExportsOnce(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	fresh := gcImages(t, 1)[0] // its own: exports of it are this test's alone
	s := newStore(t)
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]result, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.run("prepare", fmt.Sprintf("m%d", i), fresh)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("prepare m%d: exit %d: %s", i, r.code, r.stderr)
		}
	}
	want := testimage.ImageID(t, fresh)
	if n := exportCreates(t, start, want); n != 1 {
		t.Errorf("8 concurrent prepares of one new image created %d containers, want 1", n)
	}
	for _, m := range s.machines() {
		if m.Digest != want {
			t.Errorf("machine %s is at %s, want %s", m.Name, m.Digest, want)
		}
	}
	// Different images and machines at once, while list and images poll:
	// they must succeed (a lock they waited for past --lock-timeout would
	// fail them with "store busy"; no wall clock judges them) and never
	// show a machine at a tree the index does not have. At least one poll
	// must fall entirely within the prepares, or this part tested nothing.
	stop := make(chan struct{})
	type pollResult struct {
		bad    []string
		within int // polls that started and ended while the prepares ran
	}
	polled := make(chan pollResult)
	var running atomic.Bool
	running.Store(true)
	go func() {
		var pr pollResult
		for {
			select {
			case <-stop:
				polled <- pr
				return
			default:
			}
			r := s.run("list", "--json")
			ri := s.run("images", "--json")
			if running.Load() {
				pr.within++
			}
			if r.code != 0 || ri.code != 0 {
				pr.bad = append(pr.bad, fmt.Sprintf("list/images: exit %d/%d: %s%s", r.code, ri.code, r.stderr, ri.stderr))
				continue
			}
			var ms []machineJSON
			var ims []imageJSON
			if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
				pr.bad = append(pr.bad, fmt.Sprintf("list --json: %v: %q", err, r.stdout))
				continue
			}
			if err := json.Unmarshal([]byte(ri.stdout), &ims); err != nil {
				pr.bad = append(pr.bad, fmt.Sprintf("images --json: %v: %q", err, ri.stdout))
				continue
			}
			have := map[string]bool{}
			for _, im := range ims {
				have[im.Digest] = true
			}
			for _, m := range ms {
				// images ran after list and nothing removes trees here:
				// every tree list named must be there.
				if m.Digest == "" || !have[m.Digest] {
					pr.bad = append(pr.bad, fmt.Sprintf("list shows %s at %q, which images does not have", m.Name, m.Digest))
				}
			}
		}
	}()
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img := v1
			if i%2 == 1 {
				img = v2
			}
			results[i] = s.run("prepare", fmt.Sprintf("n%d", i), img)
		}()
	}
	wg.Wait()
	running.Store(false)
	close(stop)
	pr := <-polled
	for _, b := range pr.bad {
		t.Error(b)
	}
	if pr.within == 0 {
		t.Error("no list/images poll ran entirely while the prepares ran: the check tested nothing")
	}
	t.Logf("%d list/images polls while the prepares ran", pr.within)
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("prepare n%d: exit %d: %s", i, r.code, r.stderr)
		}
	}
}

// TestLinkMachines: --link-machines makes /var/lib/machines/NAME reach the
// current tree, so `systemd-nspawn -M NAME` runs it. (machinectl needs
// machined, which these machines lack.)
func TestLinkMachines(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	s := newStore(t)
	name := fmt.Sprintf("rootswap-it-%d", os.Getpid())
	link := filepath.Join("/var/lib/machines", name)
	t.Cleanup(func() {
		// A stack is mounted where the link points (LinkMachine).
		if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, "/run/rootswap/machines/") {
			s.run("umount", target)
			os.Remove(target)
		}
		os.Remove(link)
	})
	s.ok("prepare", "--link-machines", name, v1)
	nspawn := func() string {
		out, err := exec.Command("systemd-nspawn", "-q", "-M", name, "--register=no", "--keep-unit", "--volatile=overlay", "/bin/cat", "/etc/rootswap-version").CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-nspawn -M %s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	if out := nspawn(); !strings.Contains(out, "v1") {
		t.Errorf("nspawn -M after prepare v1: %q", out)
	}
	s.ok("prepare", "--link-machines", name, v2)
	if out := nspawn(); !strings.Contains(out, "v2") {
		t.Errorf("nspawn -M after prepare v2: %q", out)
	}
}

// TestProgressOnlyOnATerminal: an import draws progress on a terminal
// (run under script(1) for a pty) and prints only its result otherwise.
func TestProgressOnlyOnATerminal(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	s := newStore(t)
	cmdline := fmt.Sprintf("%s --root %s import %s", rootswapBin(t), s.root, v1)
	out, err := exec.Command("script", "-qec", cmdline, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "files") || !strings.Contains(string(out), "import "+v1) {
		t.Errorf("no progress on a terminal:\n%q", out)
	}
	s2 := newStore(t)
	r := s2.run("import", v1)
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || strings.Contains(r.stderr, "\r") || !strings.Contains(lines[0], "msg=imported") {
		t.Errorf("progress drawn off a terminal: %q", r.stderr)
	}
}

// exportCreates counts the export containers created for image id (any
// image if id is "") since start. The daemon is shared (other tests, other
// stores): only an image of the test's own makes the count the test's own.
func exportCreates(t *testing.T, since time.Time, id string) int {
	t.Helper()
	c := dockerClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, errs := c.Events(ctx, events.ListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Until:   fmt.Sprintf("%d", time.Now().Add(time.Second).Unix()),
		Filters: filters.NewArgs(filters.Arg("type", "container"), filters.Arg("event", "create"), exportLabel(id)),
	})
	n := 0
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return n
			}
			if m.Action == "create" {
				n++
			}
		case err := <-errs:
			if err != nil && err.Error() != "EOF" {
				t.Fatalf("docker events: %v", err)
			}
			return n
		}
	}
}

// exportLabel filters export containers, of image id if it is not "".
func exportLabel(id string) filters.KeyValuePair {
	if id == "" {
		return filters.Arg("label", "org.rootswap.export")
	}
	return filters.Arg("label", "org.rootswap.export="+id)
}
