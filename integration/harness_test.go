package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// rootswapBin is $ROOTSWAP_BIN, or a binary built once for this process
// (with rootswap-verify beside it, as make build puts it beside
// $ROOTSWAP_BIN).
func rootswapBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ROOTSWAP_BIN"); p != "" {
		return p
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rootswap-bin")
		if err != nil {
			binErr = err
			return
		}
		// rootswap-verify goes beside rootswap, where rootswap looks for it.
		binPath = filepath.Join(dir, "rootswap")
		for _, c := range []string{"rootswap", "rootswap-verify"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "github.com/rootswap/rootswap/cmd/"+c).CombinedOutput()
			if err != nil {
				binErr = fmt.Errorf("go build %s: %v\n%s", c, err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// needIntegration skips unless ROOTSWAP_INTEGRATION=1, and then insists on
// a reachable Docker daemon and systemd-nspawn.
func needIntegration(t *testing.T) {
	t.Helper()
	if os.Getenv("ROOTSWAP_INTEGRATION") != "1" {
		t.Skip("set ROOTSWAP_INTEGRATION=1 (make test does) to run against Docker and systemd-nspawn")
	}
	c := dockerClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("ROOTSWAP_INTEGRATION=1 but the Docker daemon at DOCKER_HOST=%q is unreachable: %v", os.Getenv("DOCKER_HOST"), err)
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Fatalf("ROOTSWAP_INTEGRATION=1 but systemd-nspawn is missing: %v", err)
	}
}

func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// result is one finished rootswap invocation.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// store is a store directory under test with helpers to run rootswap on it.
type store struct {
	t          *testing.T
	root       string
	env        []string
	damagedWhy string // set by damaged
}

func newStore(t *testing.T) *store {
	t.Helper()
	s := &store{t: t, root: filepath.Join(t.TempDir(), "store")}
	t.Cleanup(func() { s.check() })
	return s
}

// run runs rootswap --root s.root args… and returns its result.
func (s *store) run(args ...string) result {
	s.t.Helper()
	cmd := exec.Command(rootswapBin(s.t), append([]string{"--root", s.root}, args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("rootswap %v: %v", args, err)
	}
	return r
}

// ok runs rootswap and fails the test unless it exits 0; it returns stdout.
func (s *store) ok(args ...string) string {
	s.t.Helper()
	r := s.run(args...)
	if r.code != 0 {
		s.t.Fatalf("rootswap %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fail runs rootswap, expects exit code want and a one-line error that
// contains every string in mention.
func (s *store) fail(want int, mention []string, args ...string) result {
	s.t.Helper()
	r := s.run(args...)
	if r.code != want {
		s.t.Fatalf("rootswap %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "rootswap: ") {
		s.t.Errorf("rootswap %s: last stderr line %q is not a rootswap error", strings.Join(args, " "), last)
	}
	for _, m := range mention {
		if !strings.Contains(last, m) {
			s.t.Errorf("rootswap %s: error %q does not mention %q", strings.Join(args, " "), last, m)
		}
	}
	return r
}

type imageJSON struct {
	Digest   string    `json:"digest"`
	Refs     []string  `json:"refs"`
	Files    int64     `json:"files"`
	Bytes    int64     `json:"bytes"`
	NewBytes int64     `json:"new_bytes"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
	Machines []string  `json:"machines"`
}

type machineJSON struct {
	Name       string    `json:"name"`
	Digest     string    `json:"digest"`
	Generation uint64    `json:"generation"`
	Image      string    `json:"image"`
	Activated  time.Time `json:"activated"`
}

func (s *store) images() []imageJSON {
	var out []imageJSON
	if err := json.Unmarshal([]byte(s.ok("images", "--json")), &out); err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *store) machines() []machineJSON {
	var out []machineJSON
	if err := json.Unmarshal([]byte(s.ok("list", "--json")), &out); err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *store) treePath(d string) string {
	alg, hex, _ := strings.Cut(strings.TrimSpace(d), ":")
	return filepath.Join(s.root, "trees", alg, hex)
}

// check is the store consistency check every test ends with: the built
// binary's whole-store `verify` must exit 0 (every indexed tree matches
// its manifest, every object hashes to its name, every machine points at
// an indexed, complete tree that the index records), and nothing may be
// left in tmp/. A test that leaves damage on purpose says so with
// damaged, and only the tmp/ check runs.
func (s *store) check() {
	t := s.t
	t.Helper()
	if _, err := os.Stat(filepath.Join(s.root, "index.db")); err != nil {
		return // the test never created the store
	}
	if s.damagedWhy != "" {
		t.Logf("consistency: verify skipped: %s", s.damagedWhy)
	} else {
		s.verify("consistency")
	}
	ents, _ := os.ReadDir(filepath.Join(s.root, "tmp"))
	for _, e := range ents {
		t.Errorf("consistency: left in tmp/: %s", e.Name())
	}
}

// verify runs the whole-store `rootswap verify` and fails the test, naming
// what it checks, unless it exits 0; it returns stdout.
func (s *store) verify(what string) string {
	s.t.Helper()
	r := s.run("verify")
	if r.code != 0 {
		s.t.Errorf("%s: verify: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// damaged records that the test leaves the store damaged on purpose, and
// why: check then skips verify.
func (s *store) damaged(why string) { s.damagedWhy = why }

// containerCreates counts the export containers rootswap created since
// start, for any image, from the daemon's events API.
func containerCreates(t *testing.T, since time.Time) int {
	t.Helper()
	return exportCreates(t, since, "")
}

// leakedContainers lists containers rootswap created and did not remove.
func leakedContainers(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label=org.rootswap.export", "--format", "{{.Names}}").CombinedOutput()
	if err != nil {
		t.Fatalf("docker ps: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// entry is what the fidelity comparison looks at for one path.
type entry struct {
	mode     fs.FileMode
	uid, gid uint32
	mtime    int64
	size     int64
	link     string
	content  string // sha256 of a regular file
	caps     string
	ino      uint64
}

func describe(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		fi, _ := d.Info()
		e := entry{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, mtime: st.Mtim.Nano(), ino: st.Ino}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.link, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			e.size = fi.Size()
			e.content = fileHash(t, p)
			buf := make([]byte, 256)
			if n, err := syscall.Getxattr(p, "security.capability", buf); err == nil {
				e.caps = fmt.Sprintf("%x", buf[:n])
			}
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
