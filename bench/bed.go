package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The systemd test bed of the integration tests (integration/
// sdbed_bed_test.go): a Debian tree with systemd as PID 1, booted under
// systemd-nspawn with --volatile=overlay, in which units that `rootswap
// unit` writes run under a real systemd and `rootswap update` restarts
// them through its D-Bus API. The bench boots the tree those tests built
// and cached; it does not build one (that is a debootstrap the tests own).

// bedTree finds the cached bed tree: $ROOTSWAP_TEST_BED_CACHE or
// /var/cache/rootswap-test, the directory there that holds systemd.
func bedTree() (string, error) {
	cache := os.Getenv("ROOTSWAP_TEST_BED_CACHE")
	if cache == "" {
		cache = "/var/cache/rootswap-test"
	}
	found, _ := filepath.Glob(filepath.Join(cache, "*-systemd-*", "usr/lib/systemd/systemd"))
	if len(found) == 0 {
		return "", fmt.Errorf("no systemd test bed under %s (any integration TestSdbed* test builds it once)", cache)
	}
	return strings.TrimSuffix(found[0], "/usr/lib/systemd/systemd"), nil
}

// bed is one booted bed.
type bed struct {
	nspawn  *exec.Cmd
	exited  chan struct{} // closed when nspawn has exited
	pid     int           // the bed's systemd, on the host
	console string
}

// bootBed boots tree with the rootswap binary rs at /usr/local/bin/rootswap
// and each of binds at its own path, and returns once its systemd says it
// is running (or degraded), within two minutes.
func bootBed(ctx context.Context, tree, rs, console string, binds ...string) (*bed, error) {
	con, err := os.Create(console)
	if err != nil {
		return nil, err
	}
	args := []string{"--quiet", "-b", "--register=no", "--keep-unit", "-D", tree, "--volatile=overlay",
		"--machine=" + fmt.Sprintf("rsbench-%d", os.Getpid()), "--console=read-only",
		"--bind-ro=" + rs + ":/usr/local/bin/rootswap"}
	for _, d := range binds {
		args = append(args, "--bind="+d)
	}
	b := &bed{nspawn: exec.Command("systemd-nspawn", args...), exited: make(chan struct{}), console: console}
	b.nspawn.Stdout, b.nspawn.Stderr = con, con
	if err := b.nspawn.Start(); err != nil {
		con.Close()
		return nil, fmt.Errorf("bed: systemd-nspawn: %w", err)
	}
	go func() { b.nspawn.Wait(); con.Close(); close(b.exited) }()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		if b.pid == 0 {
			b.pid = descendant(b.nspawn.Process.Pid, "systemd")
		}
		if b.pid != 0 {
			// is-system-running needs the manager's private socket,
			// which appears a moment after PID 1 starts.
			out, _ := b.cmd(ctx, "systemctl", "is-system-running", "--wait").Output()
			if s := strings.TrimSpace(string(out)); s == "running" || s == "degraded" {
				return b, nil
			}
		}
		select {
		case <-b.exited:
			return nil, fmt.Errorf("bed: systemd-nspawn exited while booting: %v: %s", b.nspawn.ProcessState, b.consoleTail())
		case <-ctx.Done():
			b.shutdown()
			return nil, fmt.Errorf("bed: systemd not running after 2m: %s", b.consoleTail())
		case <-poll.C:
		}
	}
}

// cmd is a command in all the bed's namespaces.
func (b *bed) cmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(b.pid), "-a"}, args...)...)
}

// argv is args as run inside the bed, for runner.exec.
func (b *bed) argv(args ...string) []string {
	return append([]string{"nsenter", "-t", strconv.Itoa(b.pid), "-a"}, args...)
}

// shutdown powers the bed off and waits for nspawn, at most 90 s, then
// kills the bed's PID 1 (its PID namespace, nested containers included,
// goes with it) and nspawn.
func (b *bed) shutdown() {
	if b.pid != 0 {
		exec.Command("nsenter", "-t", strconv.Itoa(b.pid), "-a", "systemctl", "poweroff", "--no-block").Run()
	}
	select {
	case <-b.exited:
		return
	case <-time.After(90 * time.Second):
	}
	logf("  bed: still running 90s after poweroff; killing it")
	if b.pid != 0 {
		syscall.Kill(b.pid, syscall.SIGKILL)
	}
	b.nspawn.Process.Kill()
	select {
	case <-b.exited:
	case <-time.After(30 * time.Second):
		logf("  bed: systemd-nspawn %d survived SIGKILL", b.nspawn.Process.Pid)
	}
}

func (b *bed) consoleTail() string {
	out, _ := os.ReadFile(b.console)
	return lastLines(string(out), 20)
}

// descendant finds a process named comm among pid's descendants, or 0.
func descendant(pid int, comm string) int {
	children := map[int][]int{}
	names := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(st)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
		names[p] = s[open+1 : end]
	}
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			if names[c] == comm {
				return c
			}
			queue = append(queue, c)
		}
	}
	return 0
}
