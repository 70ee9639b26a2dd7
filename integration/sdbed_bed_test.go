package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The systemd test bed: a Debian bookworm tree with systemd as PID 1,
// booted under systemd-nspawn, in which the units `rootswap unit` writes
// are started by a real systemd and their nested nspawn registers with a
// real machined.
//
// The tree is built once with debootstrap and cached under bedCache,
// keyed by bedPackages: a change to the list builds a new tree and removes
// the old one. Each test boots it with --volatile=overlay, so everything a
// bed writes lands in a tmpfs and the cached tree stays as built.

// bedPackages is what debootstrap --include= adds to minbase; bedKey names
// the cached tree for it.
const (
	bedSuite    = "bookworm"
	bedPackages = "systemd,systemd-sysv,dbus,systemd-container"
	bedFormat   = "1" // bump when the build steps change
)

func bedKey() string {
	h := sha256.Sum256([]byte(bedSuite + "\n" + bedPackages + "\n" + bedFormat))
	return bedSuite + "-systemd-" + hex.EncodeToString(h[:])[:12]
}

// bedCache is where built trees live: $ROOTSWAP_TEST_BED_CACHE or
// /var/cache/rootswap-test.
func bedCache() string {
	if d := os.Getenv("ROOTSWAP_TEST_BED_CACHE"); d != "" {
		return d
	}
	return "/var/cache/rootswap-test"
}

// bedTree returns the cached tree, building it first if it is missing.
// Concurrent test processes build it once (an flock); a build goes to a
// temporary directory renamed into place, so a killed build leaves no half
// tree under the final name, only a tmp- directory the next build removes.
func bedTree(t *testing.T) string {
	t.Helper()
	cache := bedCache()
	final := filepath.Join(cache, bedKey())
	if _, err := os.Stat(filepath.Join(final, "usr/lib/systemd/systemd")); err == nil {
		return final
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatalf("bed cache: %v", err)
	}
	lf, err := os.OpenFile(filepath.Join(cache, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("bed cache: %v", err)
	}
	defer lf.Close()
	for {
		err = syscall.Flock(int(lf.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		t.Fatalf("bed cache lock: %v", err)
	}
	if _, err := os.Stat(filepath.Join(final, "usr/lib/systemd/systemd")); err == nil {
		return final // another process built it while we waited
	}
	// Under the lock nobody else builds: what is not the current key is
	// a killed build or an old package list.
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if e.IsDir() && e.Name() != bedKey() {
			os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
	os.RemoveAll(final) // a tree without systemd is not ours to trust

	debootstrap, err := exec.LookPath("debootstrap")
	if err != nil {
		debootstrap = "/usr/sbin/debootstrap"
		if _, err := os.Stat(debootstrap); err != nil {
			t.Fatalf("debootstrap missing (scripts/deps.sh installs it): %v", err)
		}
	}
	tmp, err := os.MkdirTemp(cache, "tmp-")
	if err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(tmp, "tree")
	mirror := aptMirror()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, debootstrap, "--variant=minbase", "--include="+bedPackages, bedSuite, tree, mirror)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("debootstrap %s from %s: %v\n%s", bedSuite, mirror, err, tail(string(out), 30))
	}
	if err := os.Rename(tree, final); err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("bed cache: %v", err)
	}
	os.RemoveAll(tmp)
	t.Logf("bed: built %s from %s in %s", final, mirror, time.Since(start).Round(100*time.Millisecond))
	return final
}

// aptMirror is the Debian mirror apt is configured with (deb822 URIs: or a
// one-line deb entry for the suite), or deb.debian.org.
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	oneLine := regexp.MustCompile(`^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+` + bedSuite + `\s`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// deb822: stanzas separated by blank lines.
		for _, stanza := range strings.Split(string(b), "\n\n") {
			var uri string
			suite := false
			for _, l := range strings.Split(stanza, "\n") {
				l = strings.TrimSpace(l)
				if m := oneLine.FindStringSubmatch(l); m != nil && strings.Contains(m[1], "debian") {
					return m[1]
				}
				if v, ok := strings.CutPrefix(l, "URIs:"); ok {
					uri = strings.Fields(v)[0]
				}
				if v, ok := strings.CutPrefix(l, "Suites:"); ok {
					for _, s := range strings.Fields(v) {
						suite = suite || s == bedSuite
					}
				}
			}
			if uri != "" && suite {
				return uri
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// bed is one booted test bed.
type bed struct {
	t       *testing.T
	booted  time.Time
	nspawn  *exec.Cmd
	exited  chan struct{} // closed when nspawn has exited
	pid     int           // the bed's PID 1 (systemd) on the host
	console string        // nspawn's and the bed's console output
	store   string        // a store directory, the same path inside and out
}

// bootBed boots the cached tree and returns once its systemd says it is
// running (or degraded). The bed is powered off and its state removed when
// the test ends, whatever happens.
func bootBed(t *testing.T) *bed {
	t.Helper()
	tree := bedTree(t)
	bin, err := filepath.Abs(rootswapBin(t))
	if err != nil {
		t.Fatal(err)
	}
	sock := strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")
	if sock == "" || strings.Contains(sock, "://") {
		t.Fatalf("bed: DOCKER_HOST=%q is not a unix socket to bind into the bed", os.Getenv("DOCKER_HOST"))
	}
	dir := t.TempDir()
	b := &bed{t: t, exited: make(chan struct{}), console: filepath.Join(dir, "console"), store: filepath.Join(dir, "store")}
	if err := os.Mkdir(b.store, 0o755); err != nil {
		t.Fatal(err)
	}
	con, err := os.Create(b.console)
	if err != nil {
		t.Fatal(err)
	}
	machine := fmt.Sprintf("rsbed-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	// The docker socket goes where the Docker client looks by default, so
	// the units need no DOCKER_HOST; --console=read-only keeps the bed's
	// getty off the test's terminal.
	b.nspawn = exec.Command("systemd-nspawn", "--quiet", "-b", "--register=no", "--keep-unit",
		"-D", tree, "--volatile=overlay", "--machine="+machine, "--console=read-only",
		"--bind-ro="+bin+":/usr/local/bin/rootswap",
		"--bind="+sock+":/run/docker.sock",
		"--bind="+b.store)
	b.nspawn.Stdout, b.nspawn.Stderr = con, con
	start := time.Now()
	b.booted = start
	if err := b.nspawn.Start(); err != nil {
		con.Close()
		t.Fatalf("bed: systemd-nspawn: %v", err)
	}
	go func() { b.nspawn.Wait(); con.Close(); close(b.exited) }()
	// Cleanups run last first: the bed stops, then the store is checked.
	s := &store{t: t, root: b.store}
	t.Cleanup(s.check)
	t.Cleanup(b.shutdown)

	deadline := time.Now().Add(2 * time.Minute)
	for b.pid == 0 {
		select {
		case <-b.exited:
			t.Fatalf("bed: systemd-nspawn exited during boot: %v\n%s", b.nspawn.ProcessState, b.consoleTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bed: no systemd under nspawn %d after 2m\n%s", b.nspawn.Process.Pid, b.consoleTail())
		}
		b.pid = descendant(b.nspawn.Process.Pid, "systemd")
		if b.pid == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	// is-system-running --wait needs the manager's private socket, which
	// appears a moment after PID 1 starts.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for {
		c := b.cmd("systemctl", "is-system-running", "--wait")
		out, _ := exec.CommandContext(ctx, c.Path, c.Args[1:]...).Output()
		state := strings.TrimSpace(string(out))
		if state == "running" || state == "degraded" {
			if state == "degraded" {
				failed, _ := b.cmd("systemctl", "--failed", "--no-pager").CombinedOutput()
				t.Logf("bed: degraded:\n%s", failed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bed: systemd not running after 2m (state %q)\n%s", state, b.consoleTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("bed: %s booted in %s (PID 1 is %d on the host)", machine, time.Since(start).Round(10*time.Millisecond), b.pid)
	return b
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
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
		names[p] = s[open+1 : close]
	}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if names[c] == comm {
				return c
			}
			queue = append(queue, c)
		}
	}
	return 0
}

// cmd is a command run inside the bed (all its namespaces).
func (b *bed) cmd(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(b.pid), "-a"}, args...)...)
}

// run runs a command in the bed with a deadline and returns its output
// and exit code.
func (b *bed) run(args ...string) (string, int) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := b.cmd(args...)
	c = exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	out, err := c.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		b.t.Fatalf("bed: %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// ok runs a command in the bed and fails the test unless it exits 0.
func (b *bed) ok(args ...string) string {
	b.t.Helper()
	out, code := b.run(args...)
	if code != 0 {
		b.t.Fatalf("bed: %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// rootswap runs the bed's rootswap on the bed's store.
func (b *bed) rootswap(args ...string) string {
	b.t.Helper()
	return b.ok(append([]string{"/usr/local/bin/rootswap", "--root", b.store}, args...)...)
}

// writeFile writes a file inside the bed (its /etc is in the overlay).
func (b *bed) writeFile(path, content string) {
	b.t.Helper()
	c := b.cmd("sh", "-c", `mkdir -p "$(dirname "$1")" && cat > "$1"`, "sh", path)
	c.Stdin = strings.NewReader(content)
	if out, err := c.CombinedOutput(); err != nil {
		b.t.Fatalf("bed: write %s: %v\n%s", path, err, out)
	}
}

// install writes rootswap-NAME.service with `rootswap unit --install` in
// the bed, plus any drop-ins (file name → content), and reloads systemd.
// A failing test prints the unit's journal.
func (b *bed) install(name string, dropins map[string]string, unitArgs ...string) string {
	b.t.Helper()
	return b.installUnit("rootswap-"+name+".service", dropins, unitArgs...)
}

// installUnit runs `rootswap unit --install` in the bed with unitArgs
// (its options, NAME, IMAGE…), which writes unit, plus drop-ins of unit
// (file name → content), and reloads systemd. A failing test prints the
// unit's journal.
func (b *bed) installUnit(unit string, dropins map[string]string, unitArgs ...string) string {
	b.t.Helper()
	b.rootswap(append([]string{"unit", "--install", "--unit-dir", "/etc/systemd/system"}, unitArgs...)...)
	for f, c := range dropins {
		b.writeFile("/etc/systemd/system/"+unit+".d/"+f, c)
	}
	b.ok("systemctl", "daemon-reload")
	b.t.Cleanup(func() {
		if b.t.Failed() && b.pid != 0 {
			out, _ := b.run("journalctl", "-u", unit, "--no-pager", "-o", "short-precise", "-n", "200")
			b.t.Logf("journal of %s:\n%s", unit, out)
		}
	})
	return unit
}

// journalEntry is one journal entry as journalctl -o json prints it.
type journalEntry struct {
	Message  string
	Realtime time.Time
	Fields   map[string]any
}

// journal returns unit's entries (all of them, oldest first).
func (b *bed) journal(args ...string) []journalEntry {
	b.t.Helper()
	out := b.ok(append([]string{"journalctl", "--no-pager", "-o", "json", "--output-fields=MESSAGE,__REALTIME_TIMESTAMP,MESSAGE_ID,_PID,SYSLOG_IDENTIFIER,PRIORITY,ROOTSWAP_MACHINE"}, args...)...)
	var es []journalEntry
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		e := journalEntry{Fields: m}
		switch v := m["MESSAGE"].(type) {
		case string:
			e.Message = v
		case []any: // non-UTF-8 messages come as byte arrays
			var buf bytes.Buffer
			for _, x := range v {
				if f, ok := x.(float64); ok {
					buf.WriteByte(byte(f))
				}
			}
			e.Message = buf.String()
		}
		if us, err := strconv.ParseInt(fmt.Sprint(m["__REALTIME_TIMESTAMP"]), 10, 64); err == nil {
			e.Realtime = time.UnixMicro(us)
		}
		es = append(es, e)
	}
	return es
}

// waitJournal polls the journal (args select the entries) until match
// holds for at least n entries, and returns them; it fails the test after
// deadline.
func (b *bed) waitJournal(what string, n int, deadline time.Duration, match func(journalEntry) bool, args ...string) []journalEntry {
	b.t.Helper()
	end := time.Now().Add(deadline)
	for {
		var got []journalEntry
		for _, e := range b.journal(args...) {
			if match(e) {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(end) {
			b.t.Fatalf("bed: %d of %d %s in the journal after %s", len(got), n, what, deadline)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or deadline passes.
func (b *bed) waitFor(what string, deadline time.Duration, cond func() bool) {
	b.t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			b.t.Fatalf("bed: %s: not after %s", what, deadline)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shutdown powers the bed off through its systemd, waits for nspawn to
// exit (a deadline, then SIGKILL of the bed's PID 1, which takes its PID
// namespace and every nested container with it, and of nspawn), and
// removes the store the containers used.
func (b *bed) shutdown() {
	t := b.t
	start := time.Now()
	if b.pid != 0 {
		exec.Command("nsenter", "-t", strconv.Itoa(b.pid), "-a", "systemctl", "poweroff", "--no-block").Run()
	}
	select {
	case <-b.exited:
		t.Logf("bed: powered off in %s", time.Since(start).Round(10*time.Millisecond))
	case <-time.After(90 * time.Second):
		t.Errorf("bed: still running 90s after poweroff; killing it\n%s", b.consoleTail())
		if b.pid != 0 {
			syscall.Kill(b.pid, syscall.SIGKILL)
		}
		b.nspawn.Process.Kill()
		select {
		case <-b.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("bed: systemd-nspawn %d survived SIGKILL", b.nspawn.Process.Pid)
		}
	}
	if t.Failed() {
		t.Logf("bed console:\n%s", b.consoleTail())
	}
	bedTotal.n++
	bedTotal.d += time.Since(b.booted)
	t.Logf("bed: this bed lived %s; %d beds so far in this process, %s in all",
		time.Since(b.booted).Round(100*time.Millisecond), bedTotal.n, bedTotal.d.Round(100*time.Millisecond))
}

// bedTotal sums the beds' lifetimes (boot to powered off), the systemd
// tests' cost; tests run one at a time, so no lock.
var bedTotal struct {
	n int
	d time.Duration
}

func (b *bed) consoleTail() string {
	out, _ := os.ReadFile(b.console)
	return tail(string(out), 40)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
