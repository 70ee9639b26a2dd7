package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// gcImages imports n images with docker import: each has the same 4 MB
// of shared files plus 1 MB of its own, so what gc frees is known.
func gcImages(t *testing.T, n int) []string {
	t.Helper()
	stamp := time.Now().UnixNano()
	mt := time.Unix(1700000000, 0)
	var refs []string
	for v := 1; v <= n; v++ {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, d := range []string{"usr/", "usr/share/", "etc/"} {
			tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
		}
		add := func(name string, seed uint64, size int) {
			rng := rand.New(rand.NewPCG(seed, seed))
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), ModTime: mt})
			tw.Write(data)
		}
		for i := 0; i < 4; i++ {
			add(fmt.Sprintf("usr/share/shared-%d", i), uint64(i), 1<<20)
		}
		add("usr/share/own", uint64(stamp)+uint64(v), 1<<20)
		version := fmt.Sprintf("v%d\n", v)
		tw.WriteHeader(&tar.Header{Name: "etc/version", Mode: 0o644, Size: int64(len(version)), ModTime: mt})
		tw.Write([]byte(version))
		tw.Close()
		ref := fmt.Sprintf("rootswap-test/gc:%d-v%d", stamp, v)
		cmd := exec.Command("docker", "import", "-", ref)
		cmd.Stdin = &buf
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker import: %v\n%s", err, out)
		}
		refs = append(refs, ref)
		t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
	}
	return refs
}

// storeBytes is the space the store's files take (hard links once), but
// index.db's: bbolt grows its file by whole chunks as records come and
// go, which says nothing of what gc freed.
func storeBytes(t *testing.T, root string) int64 {
	seen := map[uint64]bool{}
	var n int64
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || p == filepath.Join(root, "index.db") {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !seen[st.Ino] {
			seen[st.Ino] = true
			n += fi.Size()
		}
		return nil
	})
	return n
}

func TestGCKeepsGenerationsAndPins(t *testing.T) {
	needIntegration(t)
	imgs := gcImages(t, 5)
	s := newStore(t)
	var digests []string
	for _, img := range imgs[:4] {
		s.ok("prepare", "app", img)
		digests = append(digests, strings.TrimSpace(s.ok("import", img)))
	}
	// A fifth tree, not used by any machine, pinned.
	pinned := strings.TrimSpace(s.ok("import", imgs[4]))
	s.ok("pin", pinned)

	before := listing(t, s.root)
	plan := s.ok("gc", "--keep", "3", "--dry-run", "--json")
	if after := listing(t, s.root); after != before {
		t.Fatalf("gc --dry-run changed the store")
	}
	var p struct {
		Trees []struct {
			Digest string `json:"digest"`
		} `json:"trees"`
	}
	if err := json.Unmarshal([]byte(plan), &p); err != nil {
		t.Fatalf("gc --dry-run --json: %v\n%s", err, plan)
	}
	if len(p.Trees) != 1 || p.Trees[0].Digest != digests[0] {
		t.Fatalf("gc plan removes %+v, want only v1 %s", p.Trees, digests[0])
	}

	size := storeBytes(t, s.root)
	s.ok("gc", "--keep", "3")
	freed := size - storeBytes(t, s.root)
	if _, err := os.Stat(s.treePath(digests[0])); !os.IsNotExist(err) {
		t.Errorf("v1's tree survived gc --keep 3: %v", err)
	}
	for _, d := range append(digests[1:], pinned) {
		// verify DIGEST checks the tree whole: a stack's links against its
		// record, each layer directory against its manifest. (Mounting it
		// to look would make gc keep it below.)
		if r := s.run("verify", d); r.code != 0 {
			t.Errorf("gc removed or damaged a kept tree %s: %s%s", d, r.stdout, r.stderr)
		}
	}
	// v1 owned 1 MB and a version file; everything else is shared.
	if freed < 1<<20 || freed > 1<<20+64<<10 {
		t.Errorf("gc freed %d bytes, want about v1's unique 1 MiB", freed)
	}
	s.verify("after gc")
	// Two rollbacks are still possible.
	for _, want := range []string{"v3", "v2"} {
		s.ok("rollback", "app")
		cur, err := os.Readlink(filepath.Join(s.root, "machines", "app", "current"))
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(s.view("sha256:"+filepath.Base(cur)), "etc", "version")); err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("after rollback: %q %v, want %s", b, err, want)
		}
	}
	s.ok("unpin", pinned)
	s.ok("gc", "--keep", "3")
	if _, err := os.Stat(s.treePath(pinned)); !os.IsNotExist(err) {
		t.Errorf("an unpinned, unused tree survived gc: %v", err)
	}
	s.fail(1, []string{"not found"}, "pin", "sha256:"+strings.Repeat("1", 64))
}

// TestGCUnderConcurrency runs prepares (new and cached digests) and
// rollbacks on two machines while gc runs again and again, for a fixed
// number of rounds rather than a wall clock. "store busy" is tolerated
// (each command waits up to --lock-timeout) but is not success: most of
// each side's commands must succeed, gc must really remove trees, and the
// prepares must really import again what gc removed. No machine's tree
// ever misses a file; the store is consistent at the end.
func TestGCUnderConcurrency(t *testing.T) {
	needIntegration(t)
	imgs := gcImages(t, 6)
	s := newStore(t)
	s.ok("prepare", "a", imgs[0])
	s.ok("prepare", "b", imgs[1])
	const rounds = 15 // per machine
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	type tally struct{ ran, ok, busy, imported, removed int }
	tallies := map[string]*tally{"a": {}, "b": {}, "gc": {}}
	check := func(who string, args []string, r result) bool {
		mu.Lock()
		defer mu.Unlock()
		tl := tallies[who]
		tl.ran++
		switch {
		case r.code == 0:
			tl.ok++
			return true
		case strings.Contains(r.stderr, "store busy"):
			tl.busy++
		case args[0] == "rollback" && (strings.Contains(r.stderr, "oldest") || strings.Contains(r.stderr, "removed by gc")):
			tl.ok++ // a correct answer, not a failure
		default:
			failures = append(failures, fmt.Sprintf("%v: exit %d: %s", args, r.code, strings.TrimSpace(r.stderr)))
		}
		return false
	}
	lockTimeout := []string{"--lock-timeout", "60s"}
	worker := func(seed uint64, name string) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for range rounds {
			var args []string
			if rng.IntN(3) == 0 {
				args = []string{"rollback", name}
			} else {
				args = []string{"prepare", name, imgs[rng.IntN(len(imgs))]}
			}
			r := s.run(append(lockTimeout, args...)...)
			if check(name, args, r) && args[0] == "prepare" && strings.Contains(r.stdout+r.stderr, "imported") {
				mu.Lock()
				tallies[name].imported++
				mu.Unlock()
			}
			// The machine's tree must be whole at every moment we look: a
			// stack's every layer resolves (verify at the end checks each
			// against its record and manifest).
			if err := completeTree(filepath.Join(s.root, "machines", name, "current")); err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("machine %s: tree incomplete: %v", name, err))
				mu.Unlock()
			}
		}
	}
	var workersDone atomic.Int32
	wg.Add(3)
	for i, name := range []string{"a", "b"} {
		go func() {
			defer workersDone.Add(1)
			worker(uint64(i+1), name)
		}()
	}
	go func() {
		defer wg.Done()
		// gc runs as long as the prepares do, and at least three times.
		for n := 0; n < 3 || workersDone.Load() < 2; n++ {
			args := []string{"gc", "--keep", "1", "--json"}
			r := s.run(append(lockTimeout, args...)...)
			if !check("gc", args, r) {
				continue
			}
			var rep struct {
				Trees []struct{} `json:"trees"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("gc --json: %v: %q", err, r.stdout))
				mu.Unlock()
			}
			mu.Lock()
			tallies["gc"].removed += len(rep.Trees)
			mu.Unlock()
		}
	}()
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	for _, who := range []string{"a", "b", "gc"} {
		tl := tallies[who]
		t.Logf("%s: %d commands, %d succeeded, %d store busy, %d imports, %d trees removed", who, tl.ran, tl.ok, tl.busy, tl.imported, tl.removed)
		if tl.ok*2 < tl.ran {
			t.Errorf("%s: only %d of %d commands succeeded", who, tl.ok, tl.ran)
		}
	}
	if tallies["gc"].removed == 0 {
		t.Error("gc removed no tree: the prepares never raced a real sweep")
	}
	if tallies["a"].imported+tallies["b"].imported == 0 {
		t.Error("no prepare imported a tree: no export ran beside gc")
	}
	// The store check at cleanup runs verify.
}
