package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

// Images run as their authors meant (issue 20): images built here with
// each config feature, run by `docker run` and by `rootswap run`, must
// report the same argv, environment, working directory and user. The
// payload is probe, a static Go program that prints how it was started.

// probeSrc prints one JSON line: its argv, environment, working
// directory, uid, gid and groups. With "wait" among its arguments it then
// prints "up" and waits for a stop signal, which it names ("signal
// quit") before it exits 0.
const probeSrc = `package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

type report struct {
	Args   []string ` + "`json:\"args\"`" + `
	Env    []string ` + "`json:\"env\"`" + `
	Cwd    string   ` + "`json:\"cwd\"`" + `
	UID    int      ` + "`json:\"uid\"`" + `
	GID    int      ` + "`json:\"gid\"`" + `
	Groups []int    ` + "`json:\"groups\"`" + `
}

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	wd, _ := os.Getwd()
	groups, _ := os.Getgroups()
	slices.Sort(groups)
	json.NewEncoder(os.Stdout).Encode(report{os.Args, os.Environ(), wd, os.Getuid(), os.Getgid(), groups})
	if !slices.Contains(os.Args[1:], "wait") {
		return
	}
	fmt.Println("up")
	s := <-c
	fmt.Printf("signal %s\n", s)
}
`

// probeReport is what probe prints first.
type probeReport struct {
	Args   []string `json:"args"`
	Env    []string `json:"env"`
	Cwd    string   `json:"cwd"`
	UID    int      `json:"uid"`
	GID    int      `json:"gid"`
	Groups []int    `json:"groups"`
}

// probeBinary builds probe (static) once per test binary.
var probeBinary struct {
	path string
	err  error
}

func buildProbe(t *testing.T) string {
	t.Helper()
	if probeBinary.path != "" || probeBinary.err != nil {
		if probeBinary.err != nil {
			t.Fatal(probeBinary.err)
		}
		return probeBinary.path
	}
	dir, err := os.MkdirTemp("", "rootswap-probe-")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(probeSrc), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module probe\n\ngo 1.22\n"), 0o644)
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-trimpath", "-o", "probe", ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build probe: %v\n%s", err, out)
	}
	probeBinary.path = filepath.Join(dir, "probe")
	return probeBinary.path
}

// probeImage builds (once per content) an image whose Dockerfile is
// dockerfile, in a context holding probe and files (name → content),
// and returns its reference.
func probeImage(t *testing.T, dockerfile string, files map[string]string) string {
	t.Helper()
	probe := buildProbe(t)
	bin, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write([]byte(dockerfile))
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h.Write([]byte("\n" + n + "\n" + files[n]))
	}
	h.Write(bin)
	ref := "rootswap-test/config:" + hex.EncodeToString(h.Sum(nil))[:12]
	if exec.Command("docker", "image", "inspect", ref).Run() == nil {
		return ref
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "probe"), bin, 0o755)
	for n, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755)
		os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644)
	cmd := exec.Command("docker", "build", "--network", "none", "--force-rm", "-t", ref, dir)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", ref, err, out)
	}
	return ref
}

// firstReport finds probe's JSON line in out.
func firstReport(t *testing.T, what, out string) probeReport {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "{") {
			var r probeReport
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%s: %v\n%s", what, err, out)
			}
			return r
		}
	}
	t.Fatalf("%s: no report from probe in:\n%s", what, out)
	return probeReport{}
}

// runtimeEnv are the variables each runtime adds of its own, which the
// comparison leaves out: Docker's HOSTNAME; nspawn's container,
// container_uuid, NOTIFY_SOCKET and TERM (Docker sets TERM only with a
// tty); USER and LOGNAME, which nspawn sets for root (for another user
// the image names, rootswap sets them and they are compared).
var runtimeEnv = []string{"HOSTNAME", "container", "container_uuid", "NOTIFY_SOCKET", "TERM"}

func comparableEnv(env []string, uid int) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(runtimeEnv, k) || (uid == 0 && (k == "USER" || k == "LOGNAME")) {
			continue
		}
		out = append(out, kv)
	}
	sort.Strings(out)
	return out
}

// dockerRun runs image under docker run with args and returns probe's report.
func dockerRun(t *testing.T, image string, args ...string) probeReport {
	t.Helper()
	out, err := exec.Command("docker", append([]string{"run", "--rm", "--network", "none", image}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run %s %q: %v\n%s", image, args, err, out)
	}
	return firstReport(t, "docker run "+image, string(out))
}

// sameRun compares what docker and rootswap gave probe.
func sameRun(t *testing.T, what string, docker, ours probeReport) {
	t.Helper()
	if !slices.Equal(docker.Args, ours.Args) {
		t.Errorf("%s: argv %q, docker run gives %q", what, ours.Args, docker.Args)
	}
	if d, o := comparableEnv(docker.Env, docker.UID), comparableEnv(ours.Env, ours.UID); !slices.Equal(d, o) {
		t.Errorf("%s: environment\n%q\ndocker run gives\n%q", what, o, d)
	}
	if docker.Cwd != ours.Cwd || docker.UID != ours.UID || docker.GID != ours.GID || !slices.Equal(docker.Groups, ours.Groups) {
		t.Errorf("%s: cwd %s uid %d gid %d groups %v; docker run gives cwd %s uid %d gid %d groups %v",
			what, ours.Cwd, ours.UID, ours.GID, ours.Groups, docker.Cwd, docker.UID, docker.GID, docker.Groups)
	}
}

// TestRunScratchImage (issue 20 item 4): an image built FROM scratch
// around a static binary (no /usr, no /proc, no shell) runs under run,
// writable overlay or read-only root, and the store's tree stays as the
// image made it.
func TestRunScratchImage(t *testing.T) {
	needIntegration(t)
	img := probeImage(t, "FROM scratch\nCOPY probe /probe\nCMD [\"/probe\"]\n", nil)
	s := newStore(t)
	s.ok("prepare", "scratch", img)
	for _, opts := range [][]string{nil, {"--read-only"}} {
		args := append(append([]string{"run", "scratch"}, opts...), "/probe", "x")
		r := firstReport(t, strings.Join(args, " "), s.ok(args...))
		if !slices.Equal(r.Args, []string{"/probe", "x"}) {
			t.Errorf("%q: probe got argv %q", args, r.Args)
		}
	}
	if _, err := os.Stat(filepath.Join(s.treePath(s.images()[0].Digest), "usr")); err == nil {
		t.Errorf("the store's tree of a FROM scratch image has a /usr")
	}
}
