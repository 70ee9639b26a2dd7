package pid1

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary is the init when initEnv is set: the tests run it as a
// child process, the way nspawn runs rootswap's binary, and signal it.
const initEnv = "PID1_TEST_AS_INIT"

// notifyEnv moves the init's notify socket (NotifyPath) where a test
// that is no container can make it.
const notifyEnv = "PID1_TEST_NOTIFY_PATH"

func TestMain(m *testing.M) {
	if os.Getenv(initEnv) == "1" {
		if len(os.Args) > 2 && os.Args[1] == "-notify-send" {
			// The payload of TestRelaysNotify: sd_notify as libsystemd does.
			os.Exit(notifySend(os.Args[2]))
		}
		if len(os.Args) > 1 && os.Args[1] == "-notify-flood" {
			os.Exit(notifyFlood())
		}
		if p := os.Getenv(notifyEnv); p != "" {
			notifyPath = p
		}
		os.Exit(Run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// initProc is the init running argv, with its first stdout line read.
type initProc struct {
	cmd   *exec.Cmd
	lines chan string
}

func startInit(t *testing.T, argv ...string) *initProc {
	t.Helper()
	return startInitEnv(t, nil, argv...)
}

// startInitEnv is startInit with more variables for the init.
func startInitEnv(t *testing.T, env []string, argv ...string) *initProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], argv...)
	cmd.Env = append(append(os.Environ(), initEnv+"=1"), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &initProc{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return p
}

// line waits for the payload's next line.
func (p *initProc) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatal("the payload's output ended")
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no line from the payload in 30s")
	}
	return ""
}

// wait waits for the init's exit and returns its status.
func (p *initProc) wait(t *testing.T) int {
	t.Helper()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the init did not exit in 30s")
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		argv []string
		want int
	}{
		{"success", []string{"true"}, 0},
		{"status", []string{"sh", "-c", "exit 3"}, 3},
		{"killed", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"not found", []string{"rootswap-no-such-command"}, 127},
		{"no such path", []string{"/nonexistent/rootswap"}, 127},
		{"not executable", []string{"/etc/hostname"}, 126},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := startInit(t, tc.argv...).wait(t); got != tc.want {
				t.Errorf("init %q exited %d, want %d", tc.argv, got, tc.want)
			}
		})
	}
}

// A payload without a SIGTERM handler dies of the forwarded SIGTERM at
// once (as PID 1 it would ignore it); one with a handler runs it.
func TestForwardsSignals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		script string
		want   int
		said   string
	}{
		{"no handler", syscall.SIGTERM, "echo up; while :; do sleep 0.1; done", 128 + 15, ""},
		{"trap TERM", syscall.SIGTERM, "trap 'echo got TERM; exit 5' TERM; echo up; while :; do sleep 0.1; done", 5, "got TERM"},
		{"trap QUIT", syscall.SIGQUIT, "trap 'echo got QUIT; exit 6' QUIT; echo up; while :; do sleep 0.1; done", 6, "got QUIT"},
		{"trap USR1", syscall.SIGUSR1, "trap 'echo got USR1; exit 0' USR1; echo up; while :; do sleep 0.1; done", 0, "got USR1"},
		// machinectl poweroff's SIGRTMIN+4 reaches a payload that handles
		// it; one without a handler runs on (below).
		{"trap RTMIN+4", syscall.Signal(38), "trap 'echo got RTMIN+4; exit 0' 38; echo up; while :; do sleep 0.1; done", 0, "got RTMIN+4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startInit(t, "sh", "-c", tc.script)
			if l := p.line(t); l != "up" {
				t.Fatalf("payload said %q", l)
			}
			start := time.Now()
			p.cmd.Process.Signal(tc.sig)
			if tc.said != "" {
				if l := p.line(t); l != tc.said {
					t.Errorf("payload said %q after %s, want %q", l, tc.sig, tc.said)
				}
			}
			if got := p.wait(t); got != tc.want {
				t.Errorf("init exited %d after %s, want %d", got, tc.sig, tc.want)
			}
			t.Logf("%s: init exited %s after the signal", tc.sig, time.Since(start).Round(time.Millisecond))
		})
	}
}

// A real-time signal the payload has no handler for is not passed on: as
// PID 1 the payload would never get it, and its default action would kill
// it. The payload ticks on after it (it would die within milliseconds),
// and then ends by SIGTERM.
func TestRealTimeSignalOnlyToAHandler(t *testing.T) {
	p := startInit(t, "sh", "-c", "echo up; while :; do echo tick; sleep 0.1; done")
	if l := p.line(t); l != "up" {
		t.Fatalf("payload said %q", l)
	}
	p.cmd.Process.Signal(syscall.Signal(38))
	for range 5 {
		if l := p.line(t); l != "tick" {
			t.Fatalf("payload said %q", l)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if got := p.wait(t); got != 128+15 {
		t.Errorf("init exited %d after SIGRTMIN+4 and SIGTERM, want 143 (SIGTERM; 166 would be SIGRTMIN+4)", got)
	}
}

// An orphan the payload leaves behind comes to the init (the child
// subreaper here; PID 1 in a container) and is reaped when it ends: no
// zombie stays.
func TestReapsOrphans(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "orphan-done")
	// The inner shell exits at once; its background sleep is orphaned.
	p := startInit(t, "sh", "-c", `sh -c '(sleep 1; echo > "$0") &' "$1"; echo up; exec sleep 60`, "", mark)
	if l := p.line(t); l != "up" {
		t.Fatalf("payload said %q", l)
	}
	init := p.cmd.Process.Pid
	deadline := time.Now().Add(30 * time.Second)
	for sawOrphan := false; ; {
		kids := children(t, init)
		orphans, zombies := 0, 0
		for _, k := range kids {
			if k.pid != kids[0].pid { // kids[0]: the payload, the oldest
				orphans++
				if k.state == "Z" {
					zombies++
				}
			}
		}
		sawOrphan = sawOrphan || orphans > 0
		_, err := os.Stat(mark)
		if sawOrphan && err == nil && zombies == 0 && orphans == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: saw the orphan under the init: %v, it finished: %v, children now %+v", sawOrphan, err == nil, kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if got := p.wait(t); got != 128+15 {
		t.Errorf("init exited %d, want 143", got)
	}
}

type proc struct {
	pid         int
	name, state string
}

// children lists pid's children, oldest (lowest start time) first.
func children(t *testing.T, pid int) []proc {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []proc
	var starts []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		f := strings.Fields(s[close+1:])
		if pp, _ := strconv.Atoi(f[1]); pp != pid {
			continue
		}
		st, _ := strconv.Atoi(f[19])
		i := 0
		for i < len(starts) && starts[i] <= st {
			i++
		}
		kids = append(kids[:i], append([]proc{{p, s[open+1 : close], f[0]}}, kids[i:]...)...)
		starts = append(starts[:i], append([]int{st}, starts[i:]...)...)
	}
	return kids
}

// The payload runs as the user --user names, with exactly its groups,
// under the init and (--exec) in its place.
func TestUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to change user")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--user", "65534:65533", "--"}, "65534 65533 65533"},
		{[]string{"--user", "1000:1001:4,27", "--"}, "1000 1001 1001 4 27"},
		{[]string{"--user", "1000:1001:4", "--exec", "--"}, "1000 1001 1001 4"},
	} {
		p := startInit(t, append(tc.args, "sh", "-c", `echo $(id -u) $(id -g) $(id -G)`)...)
		if got := p.line(t); got != tc.want {
			t.Errorf("%q: id says %q, want %q", tc.args, got, tc.want)
		}
		if code := p.wait(t); code != 0 {
			t.Errorf("%q: exit %d", tc.args, code)
		}
	}
}

func TestCredsRoundTrip(t *testing.T) {
	for _, s := range []string{"0:0", "1000:1000", "1:2:3", "1:2:3,4,5"} {
		c, err := ParseCreds(s)
		if err != nil || c.String() != s {
			t.Errorf("ParseCreds(%q) = %v, %v: String %q", s, c, err, c.String())
		}
	}
	for _, bad := range []string{"", "1", "a:1", "1:b", "1:2:x", "1:2:3:4", "-1:0", "4294967296:0"} {
		if _, err := ParseCreds(bad); err == nil {
			t.Errorf("ParseCreds(%q) accepted", bad)
		}
	}
	for _, bad := range [][]string{{"--user", "x", "--", "true"}, {"--bogus", "--", "true"}} {
		if code := startInit(t, bad...).wait(t); code != 2 {
			t.Errorf("init %q: exit %d, want 2", bad, code)
		}
	}
}
