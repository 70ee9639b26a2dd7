package integration

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
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

// probeBinary is probe, built (static) once per test binary.
var probeBinary []byte

func buildProbe(t *testing.T) []byte {
	t.Helper()
	if probeBinary == nil {
		probeBinary = goBinary(t, "probe", probeSrc)
	}
	return probeBinary
}

// probeImage builds (once per content) an image whose Dockerfile is
// dockerfile, in a context holding probe and files (name → content),
// and returns its reference.
func probeImage(t *testing.T, dockerfile string, files map[string]string) string {
	t.Helper()
	bin := buildProbe(t)
	ctx := map[string]contextFile{"probe": {string(bin), 0o755}}
	for n, c := range files {
		ctx[n] = contextFile{c, 0o644}
	}
	return buildImage(t, "rootswap-test/config", dockerfile, ctx)
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
// container_uuid, container_host_* (the host's os-release), LANG
// (C.UTF-8), NOTIFY_SOCKET and TERM; USER and LOGNAME, which Docker does
// not set, nspawn sets to root and rootswap to the name of a non-root
// user the image names (README, "What runs").
var runtimeEnv = []string{"HOSTNAME", "container", "container_uuid", "LANG", "NOTIFY_SOCKET", "TERM", "USER", "LOGNAME"}

func comparableEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(runtimeEnv, k) || strings.HasPrefix(k, "container_host_") {
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
	if d, o := comparableEnv(docker.Env), comparableEnv(ours.Env); !slices.Equal(d, o) {
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
	if _, err := os.Stat(filepath.Join(s.view(s.images()[0].Digest), "usr")); err == nil {
		t.Errorf("the store's tree of a FROM scratch image has a /usr")
	}
}

// rootswapRun prepares image as machine name (once) and runs it with
// run's own flags pre, then args after NAME, returning probe's report.
func rootswapRun(t *testing.T, s *store, name string, pre []string, args ...string) probeReport {
	t.Helper()
	cmd := append(append(append([]string{"run"}, pre...), name), args...)
	return firstReport(t, "rootswap "+strings.Join(cmd, " "), s.ok(cmd...))
}

// etcFiles are a distroless-style /etc: users and groups, no shell.
var etcFiles = map[string]string{
	"etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\napp:x:1000:1000:app:/home/app:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
	"etc/group":  "root:x:0:\nwheel:x:10:root\nstaff:x:50:app,nonroot\napp:x:1000:\nnonroot:x:65532:\n",
}

// TestRunAsDockerRuns (issue 20 items 2 and 4): for images built FROM
// scratch around probe with each config feature, `rootswap run NAME`
// (and with a COMMAND, and --entrypoint) gives probe the argv,
// environment, working directory, uid, gid and groups `docker run` gives
// it.
func TestRunAsDockerRuns(t *testing.T) {
	needIntegration(t)
	s := newStore(t)
	for _, tc := range []struct {
		name, dockerfile string
		files            map[string]string
		command          []string // a COMMAND: it replaces CMD
	}{
		{"entrypoint-cmd-env-workdir", "FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\", \"ep\"]\nCMD [\"c1\", \"c 2\"]\nENV A=1 B=\"two words\"\nWORKDIR /work\n", nil, nil},
		{"cmd-only-path", "FROM scratch\nCOPY probe /bin/probe\nENV PATH=/bin\nCMD [\"probe\", \"p\"]\n", nil, []string{"probe", "y"}},
		{"numeric-user", "FROM scratch\nCOPY probe /probe\nUSER 1234:5678\nENTRYPOINT [\"/probe\"]\n", nil, nil},
		{"named-user", "FROM scratch\nCOPY etc /etc\nCOPY probe /probe\nUSER app\nWORKDIR /home/app\nENTRYPOINT [\"/probe\"]\n", etcFiles, nil},
		{"distroless-nonroot", "FROM scratch\nCOPY etc /etc\nCOPY probe /probe\nUSER 65532\nENTRYPOINT [\"/probe\"]\n", etcFiles, nil},
		{"user-group", "FROM scratch\nCOPY etc /etc\nCOPY probe /probe\nUSER app:staff\nENTRYPOINT [\"/probe\"]\n", etcFiles, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := probeImage(t, tc.dockerfile, tc.files)
			s.ok("prepare", tc.name, img)
			sameRun(t, "run "+tc.name, dockerRun(t, img), rootswapRun(t, s, tc.name, nil))
			command := tc.command
			if command == nil {
				command = []string{"x", "y"}
			}
			sameRun(t, "run "+tc.name+" "+strings.Join(command, " "), dockerRun(t, img, command...), rootswapRun(t, s, tc.name, nil, append([]string{"--"}, command...)...))
			if tc.name == "entrypoint-cmd-env-workdir" {
				d, _ := exec.Command("docker", "run", "--rm", "--network", "none", "--entrypoint", "/probe", img, "z").CombinedOutput()
				sameRun(t, "run --entrypoint /probe", firstReport(t, "docker run --entrypoint", string(d)),
					rootswapRun(t, s, tc.name, []string{"--entrypoint", "/probe"}, "--", "z"))
				// --setenv and --chdir win over the image's.
				r := rootswapRun(t, s, tc.name, nil, "--setenv=A=mine", "--chdir=/")
				if !slices.Contains(r.Env, "A=mine") || slices.Contains(r.Env, "A=1") || r.Cwd != "/" {
					t.Errorf("--setenv A=mine --chdir=/: env %q cwd %s", r.Env, r.Cwd)
				}
			}
		})
	}
}

// lines starts cmd and returns a channel of its stdout lines.
func lines(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	ch := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return ch
}

// waitLine waits (generously) for a line with prefix and returns it.
func waitLine(t *testing.T, what string, ch <-chan string, prefix string) string {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("%s: output ended before a line starting %q", what, prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			t.Fatalf("%s: no line starting %q in 2 minutes", what, prefix)
		}
	}
}

// TestStopSignalAsDocker (issue 20 item 2): an image's STOPSIGNAL is
// what its payload gets when it is stopped, as `docker stop` gives it:
// run passes a SIGTERM on as nspawn's --kill-signal, which rootswap's
// init forwards.
func TestStopSignalAsDocker(t *testing.T) {
	needIntegration(t)
	s := newStore(t)
	for _, sig := range []string{"SIGQUIT", "SIGINT", ""} {
		t.Run("stopsignal-"+sig, func(t *testing.T) {
			df := "FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\nCMD [\"wait\"]\n"
			if sig != "" {
				df += "STOPSIGNAL " + sig + "\n"
			}
			img := probeImage(t, df, nil)
			name := "stop" + strings.ToLower(strings.TrimPrefix(sig, "SIG"))
			id, err := exec.Command("docker", "run", "-d", "--network", "none", img).Output()
			if err != nil {
				t.Fatalf("docker run -d %s: %v", img, err)
			}
			cid := strings.TrimSpace(string(id))
			defer exec.Command("docker", "rm", "-f", cid).Run()
			dlogs := lines(t, exec.Command("docker", "logs", "-f", cid))
			waitLine(t, "docker run", dlogs, "up")
			if out, err := exec.Command("docker", "stop", cid).CombinedOutput(); err != nil {
				t.Fatalf("docker stop: %v\n%s", err, out)
			}
			want := waitLine(t, "docker stop", dlogs, "signal ")

			s.ok("prepare", name, img)
			run := exec.Command(rootswapBin(t), "--root", s.root, "run", name)
			out := lines(t, run)
			waitLine(t, "rootswap run", out, "up")
			run.Process.Signal(syscall.SIGTERM)
			got := waitLine(t, "rootswap run after SIGTERM", out, "signal ")
			run.Wait()
			t.Logf("STOPSIGNAL %q: docker stop gave %q, a stop of rootswap run %q", sig, want, got)
			if got != want {
				t.Errorf("STOPSIGNAL %q: the payload got %q, docker stop gives %q", sig, got, want)
			}
		})
	}
}

// inspectJSON is the part of `rootswap inspect --json` compared here.
type inspectJSON struct {
	Digest string `json:"digest"`
	Config struct {
		Platform    string          `json:"platform"`
		Entrypoint  []string        `json:"entrypoint"`
		Cmd         []string        `json:"cmd"`
		Env         []string        `json:"env"`
		WorkingDir  string          `json:"working_dir"`
		User        string          `json:"user"`
		StopSignal  string          `json:"stop_signal"`
		Healthcheck json.RawMessage `json:"healthcheck"`
	} `json:"config"`
	ConfigVerified bool `json:"config_verified"`
}

// dockerInspect is the part of `docker image inspect` compared here.
type dockerInspect struct {
	ID           string `json:"Id"`
	Os           string
	Architecture string
	Config       struct {
		Entrypoint  []string
		Cmd         []string
		Env         []string
		WorkingDir  string
		User        string
		StopSignal  string
		Healthcheck json.RawMessage
	}
}

// sameJSON reports whether a and b are the same JSON value; the
// healthcheck must be present in b.
func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var va, vb any
	if len(b) == 0 || json.Unmarshal(b, &vb) != nil || vb == nil {
		t.Fatalf("docker image inspect shows no healthcheck: %s", b)
	}
	if len(a) == 0 || json.Unmarshal(a, &va) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// TestInspectAsDocker (issue 20 items 1 and 6): inspect shows what
// `docker image inspect` shows of an image's config, whether the image
// came from the daemon (its description) or from a docker save archive
// (its own document, verified against the digest); an image for arm64 is
// refused on this amd64 host in one line naming both, and taken with
// --platform linux/arm64.
func TestInspectAsDocker(t *testing.T) {
	needIntegration(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the other platform here is arm64: run on amd64")
	}
	img := probeImage(t, "FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\", \"ep\"]\nCMD [\"c1\"]\nENV A=1\nWORKDIR /work\nUSER 1234:5678\nSTOPSIGNAL SIGQUIT\n"+
		"HEALTHCHECK --interval=7s --timeout=3s --retries=2 CMD [\"/probe\", \"health\"]\n", nil)
	out, err := exec.Command("docker", "image", "inspect", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var di []dockerInspect
	if err := json.Unmarshal(out, &di); err != nil || len(di) != 1 {
		t.Fatalf("docker image inspect: %v\n%s", err, out)
	}
	d := di[0]
	archive := filepath.Join(t.TempDir(), "save.tar")
	if out, err := exec.Command("docker", "save", "-o", archive, img).CombinedOutput(); err != nil {
		t.Fatalf("docker save: %v\n%s", err, out)
	}
	for _, src := range []struct{ image, store string }{{img, "daemon"}, {"docker-archive:" + archive, "archive"}} {
		s := newStore(t)
		s.ok("import", src.image)
		var got inspectJSON
		out := s.ok("inspect", "--json", d.ID)
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("inspect --json: %v\n%s", err, out)
		}
		c := got.Config
		if got.Digest != d.ID || c.Platform != d.Os+"/"+d.Architecture || !slices.Equal(c.Entrypoint, orEmpty(d.Config.Entrypoint)) ||
			!slices.Equal(c.Cmd, orEmpty(d.Config.Cmd)) || !slices.Equal(c.Env, orEmpty(d.Config.Env)) || c.WorkingDir != d.Config.WorkingDir ||
			c.User != d.Config.User || c.StopSignal != d.Config.StopSignal {
			t.Errorf("%s: inspect shows %+v, docker image inspect %+v", src.store, got, d)
		}
		if !sameJSON(t, c.Healthcheck, d.Config.Healthcheck) {
			t.Errorf("%s: inspect shows healthcheck %s, docker image inspect %s", src.store, c.Healthcheck, d.Config.Healthcheck)
		}
		if got.ConfigVerified != (src.store == "archive") {
			t.Errorf("%s: config_verified %v", src.store, got.ConfigVerified)
		}
		if text := s.ok("inspect", src.image); !strings.Contains(text, "StopSignal:") || !strings.Contains(text, "SIGQUIT") {
			t.Errorf("%s: inspect %s:\n%s", src.store, src.image, text)
		}
	}

	// An arm64 image (docker build --platform: FROM scratch needs no emulation).
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY Dockerfile /f\nCMD [\"/f\"]\n"), 0o644)
	arm := "rootswap-test/config:arm64"
	build := exec.Command("docker", "build", "-q", "--platform", "linux/arm64", "-t", arm, dir)
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build --platform linux/arm64: %v\n%s", err, out)
	}
	s := newStore(t)
	s.fail(1, []string{arm, "linux/arm64", "linux/amd64", "--platform"}, "prepare", "arm", arm)
	if imgs := s.images(); len(imgs) != 0 {
		t.Errorf("a refused image left trees: %+v", imgs)
	}
	s.ok("--platform", "linux/arm64", "prepare", "arm", arm)
	// Cached now, and still for arm64: refused without --platform, for
	// another machine (the import's cache hit) and for the one running it.
	s.fail(1, []string{arm, "linux/arm64", "linux/amd64", "--platform"}, "prepare", "arm2", arm)
	s.fail(1, []string{arm, "linux/arm64", "linux/amd64", "--platform"}, "prepare", "arm", arm)
	var got inspectJSON
	json.Unmarshal([]byte(s.ok("inspect", "--json", arm)), &got)
	if got.Config.Platform != "linux/arm64" {
		t.Errorf("inspect of the arm64 image: platform %q", got.Config.Platform)
	}
}
