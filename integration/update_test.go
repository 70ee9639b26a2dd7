package integration

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// heldGenJSON is one row of `history --json`.
type heldGenJSON struct {
	Generation uint64 `json:"generation"`
	Digest     string `json:"digest"`
	Reason     string `json:"reason"`
	Current    bool   `json:"current"`
	Health     string `json:"health"`
	Declined   string `json:"declined"`
}

func (s *store) generations(name string) []heldGenJSON {
	s.t.Helper()
	var out []heldGenJSON
	if err := json.Unmarshal([]byte(s.ok("history", name, "--json")), &out); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// TestManualRollbackHolds (issue 18 item 7), as a new user tries it: after
// `rollback app`, the prepare --pull that the restart applying it runs
// keeps v1 instead of re-activating v2, which the tag still names;
// history says why; --force takes v2 again.
func TestManualRollbackHolds(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	d1, d2 := testimage.ImageID(t, v1), testimage.ImageID(t, v2)
	tag, retag := movingTag(t, "rootswap-test/rollback-holds")
	s := newStore(t)
	retag(v1)
	s.ok("prepare", "--pull", "app", tag)
	retag(v2)
	if out := s.ok("prepare", "--pull", "app", tag); !strings.Contains(out, "generation 2") {
		t.Fatalf("upgrade: %q", out)
	}
	s.ok("rollback", "app")
	r := s.run("prepare", "--pull", "app", tag)
	if r.code != 0 || !strings.Contains(r.stdout, "generation 1 "+d1) || !strings.Contains(r.stdout, "declined") {
		t.Fatalf("prepare after the rollback: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "rolled back by hand") {
		t.Errorf("the decline does not say why:\n%s", r.stderr)
	}
	if ms := s.machines(); len(ms) != 1 || ms[0].Digest != d1 {
		t.Fatalf("machines after the held rollback: %+v", ms)
	}
	var found bool
	for _, h := range s.generations("app") {
		if h.Digest == d2 {
			found = true
			if h.Health != "failed" || h.Declined != "rolled back by hand" {
				t.Errorf("history row of v2: %+v", h)
			}
		}
	}
	if !found {
		t.Fatalf("history lacks v2")
	}
	if txt := s.ok("history", "app"); !strings.Contains(txt, "failed (rolled back by hand)") {
		t.Errorf("history does not say why v2 is declined:\n%s", txt)
	}
	if out := s.ok("prepare", "--pull", "--force", "app", tag); !strings.Contains(out, d2) {
		t.Fatalf("prepare --force: %q", out)
	}
}

// TestUpdateWithoutSystemd (issue 18 items 1 and 5) on the host, where no
// systemd runs: --dry-run changes nothing; update fetches the new version
// while nothing restarts and says the restart was not done; the machine
// keeps its tree; a source that is down fails with nothing changed; a
// second update while one holds the store waits and then exits 75.
func TestUpdateWithoutSystemd(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	d1, d2 := testimage.ImageID(t, v1), testimage.ImageID(t, v2)
	tag, retag := movingTag(t, "rootswap-test/update-nosd")
	s := newStore(t)
	retag(v1)
	s.ok("prepare", "app", tag)
	if out := s.ok("update", "app"); !strings.Contains(out, "app: up to date") {
		t.Errorf("update of an unchanged tag: %q", out)
	}
	retag(v2)
	before := listing(t, s.root)
	out := s.ok("update", "--dry-run", "app")
	if !strings.Contains(out, "would fetch "+d2) || !strings.Contains(out, tag) {
		t.Errorf("dry run:\n%s", out)
	}
	if after := listing(t, s.root); after != before {
		t.Errorf("--dry-run changed the store")
	}
	var plan []struct {
		Name, Action, Result, Running, New string
		Failed                             bool
	}
	if err := json.Unmarshal([]byte(s.ok("update", "--dry-run", "--json", "app")), &plan); err != nil || len(plan) != 1 ||
		plan[0].Running != d1 || plan[0].New != d2 || plan[0].Action != "fetch (systemd unreachable)" {
		t.Errorf("dry run --json: %+v %v", plan, err)
	}
	r := s.run("update", "app")
	if r.code != 0 || !strings.Contains(r.stdout, "app: fetched "+d2+"; restart not done: systemd unreachable") {
		t.Fatalf("update without systemd: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if ms := s.machines(); ms[0].Digest != d1 {
		t.Errorf("update without systemd flipped the machine: %+v", ms)
	}
	if len(s.images()) != 2 {
		t.Errorf("the new version was not fetched: %+v", s.images())
	}
	// The next start (prepare) finds it: a cache hit, no export.
	if out := s.ok("prepare", "app", tag); !strings.Contains(out, d2) || !strings.Contains(out, "(activated)") {
		t.Errorf("prepare after the fetch: %q", out)
	}

	// The source down: one line, exit 1, nothing changed.
	retag(v1)
	s.env = []string{"DOCKER_HOST=unix:///run/rootswap-test-no-docker.sock"}
	r = s.run("update", "app")
	if r.code != 1 || !strings.Contains(r.stdout, "nothing restarted") || !strings.Contains(r.stderr, "1 of 1 machines failed") {
		t.Errorf("update with the source down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s.env = nil
	if ms := s.machines(); ms[0].Digest != d2 {
		t.Errorf("a failed update changed the machine: %+v", ms)
	}

	// A second update while one runs: busy after --lock-timeout.
	f, err := os.OpenFile(filepath.Join(s.root, "locks", "update"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	s.fail(75, []string{"update", "busy"}, "--lock-timeout", "300ms", "update", "app")
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// TestUpdateFromRegistry (issue 18 items 3 and 5) on the host, no
// systemd: two machines following one docker:// tag fetch the new version
// once (each blob once in the registry's access log; the tag is asked
// about once); with the registry stopped, and then hung, update fails
// each machine with nothing restarted, within the registry timeout.
func TestUpdateFromRegistry(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	reg := startRegistry(t, registryOpts{})
	const name = "rootswap-test/update:stable"
	src := "docker://" + pushImageAs(t, reg, v1, name)
	s := newStore(t)
	s.ok("prepare", "a", src)
	s.ok("prepare", "b", src)
	pushImageAs(t, reg, v2, name)
	before := countsOf(reg)
	out := s.ok("update", "a", "b")
	d := before.since(reg)
	d2 := testimage.ImageID(t, v2)
	for _, m := range []string{"a", "b"} {
		if !strings.Contains(out, m+": fetched "+d2+"; restart not done") {
			t.Errorf("update of %s:\n%s", m, out)
		}
	}
	if len(d.blobs) == 0 {
		t.Errorf("update fetched no blob")
	}
	for b, n := range d.blobs {
		if n != 1 {
			t.Errorf("blob %s fetched %d times for two machines, want 1", b, n)
		}
	}
	if d.manifests["HEAD"] > 1 {
		t.Errorf("the tag was asked about %d times for two machines following it: %v", d.manifests["HEAD"], d.manifests)
	}
	t.Logf("update of two machines on one tag: blobs %v, manifests %v", d.blobs, d.manifests)

	// The registry stopped, then hung: each machine fails, nothing changes.
	pushImageAs(t, reg, v1, name)
	reg.Stop()
	r := s.run("update", "a", "b")
	if r.code != 1 || strings.Count(r.stdout, "nothing restarted") != 2 || !strings.Contains(r.stdout, reg.Addr()) {
		t.Errorf("update with the registry stopped: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	l, err := net.Listen("tcp", reg.Addr())
	if err != nil {
		t.Fatalf("listen on the stopped registry's %s: %v", reg.Addr(), err)
	}
	defer l.Close()
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	s.env = []string{registryTimeoutEnv + "=2s"}
	done := make(chan result, 1)
	go func() { done <- s.run("update", "a") }()
	select {
	case r = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatalf("update against a silent registry still running after 5m: the wait is unbounded")
	}
	t.Logf("update against a silent registry returned after %v: %s", r.took, strings.TrimSpace(r.stdout))
	if r.code != 1 || !strings.Contains(r.stdout, "nothing restarted") {
		t.Errorf("update with the registry hung: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, m := range s.machines() {
		if m.Digest != testimage.ImageID(t, v1) {
			t.Errorf("machine %s moved to %s without systemd", m.Name, m.Digest)
		}
	}
}

// TestUpdateOnAFullDisk (issue 18 item 5): update's fetch on a disk with
// k blocks free fails the machine in one line, "nothing restarted", and
// changes nothing: the machine keeps its tree, index and link agree, the
// store verifies; with the space back the fetch succeeds.
func TestUpdateOnAFullDisk(t *testing.T) {
	needIntegration(t)
	needLoop(t)
	v1, v2 := testimage.Images(t)
	d1, d2 := testimage.ImageID(t, v1), testimage.ImageID(t, v2)
	tag, retag := movingTag(t, "rootswap-test/update-full")
	retag(v1)
	img := filepath.Join(t.TempDir(), "fs.img")
	makeFS(t, img)
	l := mountFS(t, img)
	s := storeOn(t, filepath.Join(l.dir, "store"))
	s.ok("prepare", "app", tag)
	s.ok("update", "app") // up to date; makes the lock file
	retag(v2)
	for _, k := range []int64{0, 3, 40} {
		l.fill(t, k)
		r := s.run("update", "app")
		if r.code != 1 || !strings.Contains(r.stdout, "nothing restarted") || !strings.Contains(r.stdout, "no space left on device") ||
			strings.Count(strings.TrimSpace(r.stdout), "\n") != 0 {
			t.Errorf("update with %d blocks free: exit %d\n%s%s", k, r.code, r.stdout, r.stderr)
		}
		l.unfill(t)
		if link, _ := s.agree("app"); link != d1 {
			t.Errorf("update with %d blocks free moved the machine to %s", k, link)
		}
		s.check()
	}
	if out := s.ok("update", "app"); !strings.Contains(out, "fetched "+d2) {
		t.Errorf("update with the space back: %q", out)
	}
	s.check()
}
