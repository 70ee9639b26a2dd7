package integration

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// More tests through the test bed's systemd (sdbed_bed_test.go): the gc
// service and timer, and --notify units.

// TestSdbedGCTimer: `unit --gc-timer --install` gives a gc service that
// systemctl start runs on the store, removing a tree no machine keeps,
// while a tree past --keep that a running container still uses (the unit
// started on it, then three newer generations were prepared by hand)
// stays until that container stops; the timer shows in list-timers.
func TestSdbedGCTimer(t *testing.T) {
	needIntegration(t)
	start := time.Now()
	stale := payloadImage(t, "#!/bin/sh\necho stale\n")
	v1 := payloadImage(t, clockScript)
	newer := []string{
		payloadImage(t, "#!/bin/sh\necho v2\n"),
		payloadImage(t, "#!/bin/sh\necho v3\n"),
		payloadImage(t, "#!/bin/sh\necho v4\n"),
	}
	b := bootBed(t)
	s := &store{t: t, root: b.store}
	b.rootswap("unit", "--gc-timer", "--install", "--unit-dir", "/etc/systemd/system")
	unit := b.install("app", nil, "app", v1, "--", "/bin/sh", "/run.sh")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := b.run("journalctl", "-u", "rootswap-gc.service", "--no-pager", "-o", "short-precise")
			t.Logf("journal of rootswap-gc.service:\n%s", out)
		}
	})

	// Generations of app: stale (1), v1 (2, running), v2..v4 (3..5). gc's
	// default --keep 3 keeps 3..5; 1 and 2 are past it.
	prepare := func(img string) {
		t.Helper()
		// The bed's Docker socket is where the units find it, not where the
		// test's DOCKER_HOST (which nsenter passes on) points.
		b.ok("env", "DOCKER_HOST=unix:///run/docker.sock", "/usr/local/bin/rootswap", "--root", b.store, "prepare", "app", img)
	}
	prepare(stale)
	b.ok("systemctl", "start", unit)
	b.waitJournal("date lines", 1, 2*time.Minute, func(e journalEntry) bool { return dateLine.MatchString(e.Message) }, "-u", unit)
	for _, img := range newer {
		prepare(img)
	}
	staleTree := s.treePath(testimage.ImageID(t, stale))
	v1Tree := s.treePath(testimage.ImageID(t, v1))
	for _, p := range []string{staleTree, v1Tree} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("before gc: %v", err)
		}
	}
	t.Logf("gc --dry-run with v1 running:\n%s", b.rootswap("gc", "--dry-run"))

	gcRun := func() string {
		t.Helper()
		before := len(b.journal("-u", "rootswap-gc.service"))
		b.ok("systemctl", "start", "rootswap-gc.service") // a oneshot: returns when gc has finished
		var msgs []string
		for _, e := range b.journal("-u", "rootswap-gc.service")[before:] {
			msgs = append(msgs, e.Message)
		}
		return strings.Join(msgs, "\n")
	}
	removed := func(j, img string) bool {
		return regexp.MustCompile(`(?m)^removed\s+` + regexp.QuoteMeta(testimage.ImageID(t, img)) + `\s`).MatchString(j)
	}
	j := gcRun()
	if !removed(j, stale) || !strings.Contains(j, "removed 1 tree(s)") {
		t.Errorf("the gc service's journal does not show the stale tree (and only it) removed:\n%s", j)
	}
	if _, err := os.Stat(staleTree); err == nil {
		t.Errorf("gc left the stale tree %s", staleTree)
	}
	if _, err := os.Stat(v1Tree); err != nil {
		t.Errorf("gc removed the tree v1's running container uses: %v", err)
	}
	if got := strings.TrimSpace(b.ok("systemctl", "is-active", unit)); got != "active" {
		t.Errorf("%s is %q after gc", unit, got)
	}

	// Once the container is gone, nothing keeps v1.
	b.ok("systemctl", "stop", unit)
	j = gcRun()
	if !removed(j, v1) {
		t.Errorf("gc after the stop did not remove v1's tree:\n%s", j)
	}
	if _, err := os.Stat(v1Tree); err == nil {
		t.Errorf("v1's tree %s survived gc after its container stopped", v1Tree)
	}

	b.ok("systemctl", "enable", "--now", "rootswap-gc.timer")
	timers := b.ok("systemctl", "list-timers", "--no-pager", "--no-legend")
	if !regexp.MustCompile(`(?m)\srootswap-gc\.timer\s+rootswap-gc\.service\s*$`).MatchString(timers) {
		t.Errorf("systemctl list-timers does not show rootswap-gc.timer activating rootswap-gc.service:\n%s", timers)
	}
	t.Logf("whole test: %s", time.Since(start).Round(100*time.Millisecond))
}

// notifyReadySrc sends READY=1 to $NOTIFY_SOCKET and execs its arguments.
const notifyReadySrc = `package main

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

func main() {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" || len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "notify-ready: no NOTIFY_SOCKET or no command")
		os.Exit(2)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err == nil {
		_, err = c.Write([]byte("READY=1"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "notify-ready: %s: %v\n", addr, err)
		os.Exit(1)
	}
	c.Close()
	err = syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintf(os.Stderr, "notify-ready: exec %s: %v\n", os.Args[1], err)
	os.Exit(1)
}
`

// notifyImage builds (once per content) an image FROM the test image with
// a static /notify-ready (notifyReadySrc) and script as /run.sh.
func notifyImage(t *testing.T, script string) string {
	t.Helper()
	helper := goBinary(t, "notify-ready", notifyReadySrc)
	v1, _ := testimage.Images(t)
	df := "FROM " + v1 + "\nCOPY notify-ready /notify-ready\nCOPY run.sh /run.sh\n"
	return buildImage(t, "rootswap-test/sdbed-notify", df, map[string]contextFile{"notify-ready": {string(helper), 0o755}, "run.sh": {script, 0o755}})
}

// TestSdbedNotifyReady: a --notify unit stays activating while its payload
// runs but has not said READY=1 (it waits for a file the test creates in a
// bind-mounted directory, so nothing depends on timing), and becomes
// active once it does, though the payload is not the container's PID 1:
// rootswap's init is, and relays READY=1 to nspawn, which takes it from
// PID 1 only. So a stop is quick too, with no trap in the payload. Both
// for the service unit and for systemd-nspawn@NAME (--nspawn-file).
func TestSdbedNotifyReady(t *testing.T) {
	needIntegration(t)
	start := time.Now()
	img := notifyImage(t, "#!/bin/sh\n"+
		"echo payload pid $$\n"+
		"echo payload waiting\n"+
		"while [ ! -e /gate/open ]; do sleep 0.1; done\n"+
		"echo payload sends READY=1\n"+
		"exec /notify-ready /bin/sh -c 'echo payload ready; while true; do sleep 1; done'\n")
	t.Logf("notify image built in %s", time.Since(start).Round(100*time.Millisecond))
	b := bootBed(t)
	for _, kind := range []string{"service", "nspawn-file"} {
		gate := "/run/gate-" + kind
		b.ok("mkdir", "-p", gate)
		// A stop timeout far above a stop's cost: a payload that is PID 1
		// ignores the SIGTERM and waits it out.
		args := []string{"--notify", "--stop-timeout", "30s", "--bind", gate + ":/gate", "ready-" + kind, img, "--", "/bin/sh", "/run.sh"}
		var unit string
		if kind == "service" {
			unit = b.install("ready-"+kind, nil, args...)
		} else {
			unit = b.installNspawnFile("ready-"+kind, nil, args...)
		}
		b.ok("systemctl", "start", "--no-block", unit)
		b.waitJournal("payload waiting", 1, 2*time.Minute, func(e journalEntry) bool { return e.Message == "payload waiting" }, "-u", unit)
		if got := strings.TrimSpace(b.ok("systemctl", "show", "-P", "ActiveState", unit)); got != "activating" {
			t.Errorf("%s is %q while its payload has not said READY=1, want activating", unit, got)
		}
		b.ok("touch", gate+"/open")
		b.waitFor(unit+" active", 2*time.Minute, func() bool {
			return strings.TrimSpace(b.ok("systemctl", "show", "-P", "ActiveState", unit)) == "active"
		})
		var sent, ready bool
		pid := ""
		for _, e := range b.journal("-u", unit) {
			sent = sent || e.Message == "payload sends READY=1"
			ready = ready || e.Message == "payload ready"
			if p, ok := strings.CutPrefix(e.Message, "payload pid "); ok {
				pid = p
			}
		}
		if !sent || !ready {
			t.Errorf("%s: journal: payload sent READY=1 %v, ran on after it %v", kind, sent, ready)
		}
		if pid == "" || pid == "1" {
			t.Errorf("%s: the payload's PID is %q: want it behind rootswap's init", kind, pid)
		}
		stop := time.Now()
		b.ok("systemctl", "stop", unit)
		if took := time.Since(stop); took > 15*time.Second {
			t.Errorf("%s: systemctl stop of a payload without a trap took %s", kind, took.Round(time.Millisecond))
		} else {
			t.Logf("%s: systemctl stop took %s", kind, took.Round(time.Millisecond))
		}
	}
	t.Logf("whole test: %s", time.Since(start).Round(100*time.Millisecond))
}
