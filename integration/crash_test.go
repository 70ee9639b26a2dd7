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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// crashTar writes a rootfs archive of n files whose content depends on
// variant in one file only, so that successive variants are real imports
// that mostly dedupe.
func crashTar(t *testing.T, dir string, n, variant int) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	for _, d := range []string{"usr/", "usr/share/", "usr/share/data/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < n; i++ {
		data := make([]byte, 512+rng.IntN(8192))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if i == 0 {
			data = []byte(fmt.Sprintf("variant %d\n", variant))
		}
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("usr/share/data/f%05d", i), Mode: 0o644, Size: int64(len(data)), ModTime: mt})
		tw.Write(data)
	}
	tw.Close()
	p := filepath.Join(dir, fmt.Sprintf("crash-%d.tar", variant))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// killAt starts rootswap with args and SIGKILLs it after delay (if it is
// still running). It reports whether the kill landed.
func (s *store) killAt(delay time.Duration, args ...string) bool {
	s.t.Helper()
	cmd := exec.Command(rootswapBin(s.t), append([]string{"--root", s.root}, args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return false
	case <-time.After(delay):
		cmd.Process.Signal(syscall.SIGKILL)
		err := <-done
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		return err != nil && ok && ws.Signaled()
	}
}

type historyRow struct {
	Generation uint64 `json:"generation"`
	Digest     string `json:"digest"`
	Current    bool   `json:"current"`
}

// TestCrashAnywhere SIGKILLs import, prepare, rollback and gc at random
// moments and checks after each kill that the store is consistent, that
// every machine resolves to a complete tree, that the generation current
// before the kill is intact, that the killed command succeeds when run
// again, and that nothing is left in tmp/ after that.
// ROOTSWAP_CRASH_TRIALS sets the number of trials (default 100).
func TestCrashAnywhere(t *testing.T) {
	needIntegration(t)
	trials := 100
	if n, err := strconv.Atoi(os.Getenv("ROOTSWAP_CRASH_TRIALS")); err == nil {
		trials = n
	}
	v1, v2 := testimage.Images(t)
	s := newStore(t)
	dir := t.TempDir()
	hasGC := s.run("gc", "--help").code == 0

	s.ok("prepare", "m", v1)
	s.ok("prepare", "m", v2)
	base := crashTar(t, dir, 800, 0)
	d0 := strings.TrimSpace(s.ok("import", "--tar", base))
	s.ok("activate", "m", d0)

	// How long each command takes uninterrupted bounds the kill delays.
	took := func(args ...string) time.Duration {
		r := s.run(args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		return r.took
	}
	importTime := took("import", "--tar", crashTar(t, dir, 800, -1))
	t.Logf("uninterrupted: import %s", importTime)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kinds := []string{"import", "prepare", "rollback", "activate"}
	if hasGC {
		kinds = append(kinds, "gc")
	} else {
		t.Log("gc is not built yet: no gc trials")
	}
	landed := 0
	for i := 1; i <= trials; i++ {
		var hist []historyRow
		json.Unmarshal([]byte(s.ok("history", "m", "--json")), &hist)
		var before historyRow
		for _, h := range hist {
			if h.Current {
				before = h
			}
		}
		var args []string
		limit := 300 * time.Millisecond
		switch kind := kinds[i%len(kinds)]; kind {
		case "import":
			args = []string{"import", "--tar", crashTar(t, dir, 800, i)}
			limit = importTime * 6 / 5
		case "prepare":
			args = []string{"prepare", "m", []string{v1, v2}[i%2]}
		case "rollback":
			args = []string{"rollback", "m", "--to", strconv.FormatUint(hist[rng.IntN(len(hist))].Generation, 10)}
		case "activate":
			args = []string{"activate", "m", d0}
		case "gc":
			args = []string{"gc", "--keep", "2"}
		}
		if s.killAt(time.Duration(rng.Int64N(int64(limit))), args...) {
			landed++
		}
		// 1. The store is consistent (verify also cleans dead staging).
		if r := s.run("verify"); r.code != 0 {
			t.Fatalf("trial %d (%v): verify after the kill: exit %d\n%s%s", i, args, r.code, r.stdout, r.stderr)
		}
		// 2. The generation current before the kill is intact.
		if r := s.run("verify", before.Digest); r.code != 0 {
			t.Fatalf("trial %d (%v): the previous current tree %s is damaged:\n%s%s", i, args, before.Digest, r.stdout, r.stderr)
		}
		for _, m := range s.machines() {
			if _, err := os.Stat(filepath.Join(s.root, "machines", m.Name, "current", "usr")); err != nil {
				t.Fatalf("trial %d (%v): machine %s does not resolve to a complete tree: %v", i, args, m.Name, err)
			}
		}
		// 3. The killed command succeeds when run again.
		if r := s.run(args...); r.code != 0 {
			t.Fatalf("trial %d: %v run again: exit %d: %s", i, args, r.code, r.stderr)
		}
		// 4. After one more command nothing is left in tmp/.
		s.ok("list")
		if ents, _ := os.ReadDir(filepath.Join(s.root, "tmp")); len(ents) != 0 {
			names := []string{}
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("trial %d (%v): left in tmp/ after two more commands: %v", i, args, names)
		}
		if strings.HasPrefix(args[0], "import") && i%10 == 0 && hasGC {
			s.ok("gc", "--keep", "2") // keep the store small: trees of old variants go
		}
	}
	t.Logf("%d trials, %d kills landed while the command ran", trials, landed)
	// A killed export cannot remove its container; the next cold import
	// removes every one whose process is gone.
	s.ok("import", gcImages(t, 1)[0])
	if leaked := leakedContainers(t); len(leaked) > 0 {
		t.Errorf("containers of killed imports survived the next import: %v", leaked)
	}
	if landed < trials/3 {
		t.Errorf("only %d of %d kills landed: the delays are too long to test anything", landed, trials)
	}
}
