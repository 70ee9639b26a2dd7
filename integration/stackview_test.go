package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// view returns a directory that shows tree d of s as run shows it to
// nspawn: `rootswap mount d DIR` (a stack as the read-only overlay of its
// layers, a plain tree as a read-only bind), unmounted by `rootswap
// umount` when the test ends. The fidelity tests compare this, not the
// tree's directory, which for a stack holds only layer@N links.
// A tree is mounted once per store and test.
func (s *store) view(d string) string {
	s.t.Helper()
	key := s.root + " " + strings.TrimSpace(d)
	if dir, ok := views.Load(key); ok {
		return dir.(string)
	}
	dir := filepath.Join(s.t.TempDir(), "view")
	if err := os.Mkdir(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	if got := strings.TrimSpace(s.ok("mount", strings.TrimSpace(d), dir)); got != dir {
		s.t.Fatalf("rootswap mount %s %s printed %q, want the directory", d, dir, got)
	}
	views.Store(key, dir)
	s.t.Cleanup(func() {
		views.Delete(key)
		s.ok("umount", dir)
	})
	return dir
}

// views are the directories view mounted, by store root and digest.
var views sync.Map

// TestMountKeepsTreeFromGC: `rootswap mount` shows an image's tree
// read-only at a directory on the host (the run's view, whatever the
// image's layers), gc keeps the tree while it is mounted though no
// machine uses it, and after `rootswap umount` gc removes it. umount of a
// directory rootswap did not mount is refused.
func TestMountKeepsTreeFromGC(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	s := newStore(t)
	d1 := strings.TrimSpace(s.ok("import", v1))
	s.ok("prepare", "web", v2)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.ok("mount", d1, dir)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			s.run("umount", dir)
		}
	})
	if b, err := os.ReadFile(filepath.Join(dir, "etc", "rootswap-version")); err != nil || !strings.Contains(string(b), "v1") {
		t.Errorf("the mount shows /etc/rootswap-version %q (%v), want v1's", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("a write into the mount: %v, want a read-only file system", err)
	}
	start := time.Now()
	s.ok("gc", "--keep", "0")
	if _, err := os.Stat(s.treePath(d1)); err != nil {
		t.Fatalf("gc removed a mounted tree: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc", "rootswap-version")); err != nil || !strings.Contains(string(b), "v1") {
		t.Errorf("after gc the mount shows %q (%v), want v1's", b, err)
	}
	t.Logf("gc with a mounted tree: %s", time.Since(start).Round(time.Millisecond))
	if got := strings.TrimSpace(s.ok("umount", dir)); got != d1 {
		t.Errorf("umount printed %q, want %s", got, d1)
	}
	mounted = false
	s.ok("gc", "--keep", "0")
	if _, err := os.Stat(s.treePath(d1)); !os.IsNotExist(err) {
		t.Errorf("gc kept the tree after umount: %v", err)
	}
	s.fail(2, []string{"nothing is mounted there"}, "umount", dir)
	s.fail(2, []string{"inside the store"}, "mount", "web", filepath.Join(s.root, "tmp"))
}

// TestRunStackKeptWhileRunning: run of an image pulled from a registry (a
// stack of its layers) shows the container the merged tree; while it
// runs, gc --keep 0 after an upgrade keeps the tree and every layer
// directory it stacks (the overlay on the tree's directory in run's
// namespace), and removes the tree once the run has ended.
func TestRunStackKeptWhileRunning(t *testing.T) {
	needIntegration(t)
	_, v2 := testimage.Images(t)
	reg := startRegistry(t, registryOpts{})
	ref := "docker://" + pushImageAs(t, reg, imageWithRun(t), "rootswap-test/stack-run:v1")
	s := newStore(t)
	s.ok("prepare", "app", ref)
	d1 := s.machines()[0].Digest
	links, err := filepath.Glob(filepath.Join(s.treePath(d1), "layer@*"))
	if err != nil || len(links) < 2 {
		t.Fatalf("tree %s is no stack of 2 layers or more: %v %v", d1, links, err)
	}
	if out := s.ok("run", "app", "/bin/cat", "/etc/rootswap-version"); !strings.Contains(out, "v1") {
		t.Errorf("run of the stack: %q, want v1's /etc/rootswap-version", out)
	}
	cmd := exec.Command(rootswapBin(t), "--root", s.root, "run", "app", "/bin/sh", "-c", "trap 'exit 0' TERM; echo started; sleep 100000 & wait")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			stopped = true
		}
	}
	t.Cleanup(stop)
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "started" {
		t.Fatalf("run: %q", line)
	}
	s.ok("prepare", "app", v2)
	s.ok("gc", "--keep", "0")
	for _, l := range links {
		if _, err := os.Stat(l); err != nil { // follows the link into layerdirs/
			t.Errorf("gc removed what a running stack stands on: %s: %v", l, err)
		}
	}
	stop()
	s.ok("gc", "--keep", "0")
	if _, err := os.Lstat(s.treePath(d1)); !os.IsNotExist(err) {
		t.Errorf("gc kept the stack after its run ended: %v", err)
	}
}

// stored describes what the store holds of tree d on disk, without
// mounting it: the tree's directory and, for a stack, every layer
// directory a layer@N link names, each under its link's name. Comparing
// two of these says whether anything of the tree changed, where a mount
// cannot be made (a file system the test unmounts in between).
func (s *store) stored(d string) map[string]entry {
	s.t.Helper()
	dir := s.treePath(strings.TrimSpace(d))
	out := describe(s.t, dir)
	links, err := filepath.Glob(filepath.Join(dir, "layer@*"))
	if err != nil {
		s.t.Fatal(err)
	}
	for _, l := range links {
		target, err := filepath.EvalSymlinks(l)
		if err != nil {
			s.t.Fatalf("tree %s: %v", d, err)
		}
		for p, e := range describe(s.t, target) {
			out[filepath.Join(filepath.Base(l), p)] = e
		}
	}
	return out
}
