package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Stops without systemd: `rootswap run` stays the parent of systemd-nspawn,
// passes signals on, records a stop for `report`, and exits with nspawn's
// status (see activate.Run).

// trapScript handles SIGTERM by leaving a marker in the bound /mark and
// exiting 7, a status no stop path of nspawn's own produces.
const trapScript = "#!/bin/sh\ntrap 'echo term > /mark/term; exit 7' TERM\necho up\nwhile true; do sleep 0.1; done\n"

// runProc is a `rootswap run` started in the background, with its first
// stdout line read.
type runProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
}

// waitStderr waits (generously) until run's stderr has said want.
func (p *runProc) waitStderr(want string) {
	p.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p.mu.Lock()
		got := p.stderr.String()
		p.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("run did not say %q within 2 minutes; stderr:\n%s", want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *runProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	os.Stderr.Write(b)
	return p.stderr.Write(b)
}

// startRun starts rootswap run args… and waits (generously) for the
// payload's first line, which must be want.
func startRun(t *testing.T, s *store, want string, args ...string) *runProc {
	t.Helper()
	cmd := exec.Command(rootswapBin(t), append([]string{"--root", s.root, "run"}, args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	p := &runProc{t: t, cmd: cmd}
	cmd.Stderr = p
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			// nspawn dies with run; the container's PID 1 would not.
			var pid1s []int
			for _, n := range children(t, cmd.Process.Pid) {
				pid1s = append(pid1s, children(t, n)...)
			}
			cmd.Process.Kill()
			cmd.Wait()
			for _, pid := range pid1s {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(l)
		// Keep draining, or the payload blocks on a full pipe.
		bufio.NewReader(stdout).WriteTo(discard{})
	}()
	select {
	case l := <-line:
		if l != want {
			t.Fatalf("run %v: first line %q, want %q", args, l, want)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("run %v: no first line in 2 minutes", args)
	}
	return p
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// wait waits (generously) for run to exit and returns its exit status.
func (p *runProc) wait() int {
	p.t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			p.t.Fatal(err)
		}
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(2 * time.Minute):
		p.t.Fatalf("run did not exit within 2 minutes")
	}
	return -1
}

// children lists the PIDs whose parent is pid.
func children(t *testing.T, pid int) []int {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, w := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(w); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// storeMountRO reports whether the mount namespace of pid has a mount at
// dir, and whether the topmost one there is read-only.
func storeMountRO(t *testing.T, pid, dir string) (mounted, ro bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || f[4] != dir {
			continue
		}
		mounted = true
		ro = strings.Contains(","+f[5]+",", ",ro,")
	}
	return mounted, ro
}

type historyJSON struct {
	Generation uint64 `json:"generation"`
	Failures   int    `json:"failures"`
	LastResult string `json:"last_result"`
	Current    bool   `json:"current"`
}

func currentHistory(t *testing.T, s *store, name string) historyJSON {
	t.Helper()
	var rows []historyJSON
	if err := json.Unmarshal([]byte(s.ok("history", name, "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Current {
			return r
		}
	}
	t.Fatalf("history %s: no current generation", name)
	return historyJSON{}
}

// report runs `rootswap report name` as systemd's ExecStopPost would,
// with what systemd measured for an operator's stop: nspawn's exit 1.
func report(t *testing.T, s *store, name, result, code, status string) string {
	t.Helper()
	e := *s
	e.env = append(append([]string(nil), s.env...), "SERVICE_RESULT="+result, "EXIT_CODE="+code, "EXIT_STATUS="+status)
	r := e.run("report", name)
	if r.code != 0 {
		t.Fatalf("report %s: exit %d\n%s%s", name, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// TestRunStopIsAStop: SIGTERM to `rootswap run` reaches the payload as
// SIGTERM (through nspawn's --kill-signal), run exits with nspawn's
// status, and the next report records a stop, not a failure, whatever
// systemd's variables say. nspawn runs in the read-only view of the store
// (its mountinfo), the host keeps it writable. A run that ends by itself
// with the same variables is a failure.
func TestRunStopIsAStop(t *testing.T) {
	needIntegration(t)
	img := payloadImage(t, trapScript)
	s := newStore(t)
	s.ok("prepare", "app", img)
	mark := t.TempDir()

	p := startRun(t, s, "up", "app", "--bind="+mark+":/mark", "/bin/sh", "/run.sh")
	root, err := filepath.EvalSymlinks(s.root)
	if err != nil {
		t.Fatal(err)
	}
	kids := children(t, p.cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("run has children %v, want one (systemd-nspawn)", kids)
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(kids[0]) + "/comm"); strings.TrimSpace(string(comm)) != "systemd-nspawn" {
		t.Errorf("run's child is %q, want systemd-nspawn", comm)
	}
	if m, ro := storeMountRO(t, strconv.Itoa(kids[0]), root); !m || !ro {
		t.Errorf("nspawn's mount namespace: store %s mounted %v, read-only %v; want a read-only mount", root, m, ro)
	}
	if _, ro := storeMountRO(t, "self", root); ro {
		t.Errorf("the host sees the store %s read-only", root)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 7 {
		t.Errorf("run exited %d after SIGTERM, want the payload's 7 passed on by nspawn", code)
	}
	if b, err := os.ReadFile(filepath.Join(mark, "term")); err != nil || strings.TrimSpace(string(b)) != "term" {
		t.Errorf("the payload did not get SIGTERM: marker %q, %v", b, err)
	}
	out := report(t, s, "app", "exit-code", "exited", "1")
	if !strings.Contains(out, "stop") {
		t.Errorf("report after a stop said %q", out)
	}
	if h := currentHistory(t, s, "app"); h.Failures != 0 || !strings.HasPrefix(h.LastResult, "stopped:") {
		t.Errorf("history after a stop: %+v; want no failure and a stopped result", h)
	}

	// The same variables without a stop: a failure. The record was consumed.
	r := s.run("run", "app", "/bin/sh", "-c", "exit 1")
	if r.code != 1 {
		t.Errorf("run of a payload that exits 1: exit %d, want 1\n%s", r.code, r.stderr)
	}
	report(t, s, "app", "exit-code", "exited", "1")
	if h := currentHistory(t, s, "app"); h.Failures != 1 || h.LastResult != "exit-code exited 1" {
		t.Errorf("history after a payload's exit 1: %+v; want 1 failure", h)
	}
}

// TestRunSignals: SIGHUP, which would kill nspawn and orphan the
// container, is ignored with a warning; a second SIGTERM makes nspawn
// terminate a payload that ignores the first, and that is a stop too;
// SIGKILL of run takes nspawn with it.
func TestRunSignals(t *testing.T) {
	needIntegration(t)
	img := payloadImage(t, "#!/bin/sh\ntrap '' TERM\necho up\nwhile true; do sleep 0.1; done\n")
	s := newStore(t)
	s.ok("prepare", "app", img)

	p := startRun(t, s, "up", "app", "/bin/sh", "/run.sh")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitStderr("SIGHUP ignored") // before any SIGTERM, so none merges with it
	p.cmd.Process.Signal(syscall.SIGTERM)
	// Two signals sent at once may merge into one: the second goes after
	// nspawn has passed the first on. The payload ignores it.
	p.waitStderr("Trying to halt container")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(); code == 0 {
		t.Errorf("run exited 0 after two SIGTERMs to a payload that ignores SIGTERM")
	}
	report(t, s, "app", "exit-code", "exited", "1")
	if h := currentHistory(t, s, "app"); h.Failures != 0 {
		t.Errorf("a stop by two SIGTERMs counted as a failure: %+v", h)
	}

	// SIGKILL of run: nspawn goes too (Pdeathsig), as if run had exec'd it.
	p = startRun(t, s, "up", "app", "/bin/sh", "/run.sh")
	kids := children(t, p.cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("run has children %v, want one", kids)
	}
	// nspawn's SIGKILL leaves the container's PID 1 to the host's init,
	// as it always did when run exec'd nspawn: only a unit's cgroup
	// catches it. The test cleans up after itself.
	for _, pid1 := range children(t, kids[0]) {
		t.Cleanup(func() { syscall.Kill(pid1, syscall.SIGKILL) })
	}
	p.cmd.Process.Kill()
	p.wait()
	deadline := time.Now().Add(2 * time.Minute)
	for syscall.Kill(kids[0], 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("nspawn %d outlived run's SIGKILL by 2 minutes", kids[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
