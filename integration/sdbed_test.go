package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// Tests through a real systemd: the units `rootswap unit --install` writes,
// started, restarted and stopped by the systemd of a booted test bed
// (sdbed_bed_test.go), their nested nspawn registered with its machined.

// payloadImage builds (once per content) an image FROM the test image with
// script as /run.sh, and returns its reference.
func payloadImage(t *testing.T, script string) string {
	t.Helper()
	v1, _ := testimage.Images(t)
	return payloadOn(t, v1, script)
}

// exports counts the containers rootswap had Docker create to export
// image since then (by their label, which names the image ID: an image=
// filter would not match a container created from the ID).
func exports(t *testing.T, image string, since time.Time) int {
	t.Helper()
	out, err := exec.Command("docker", "events", "--since", fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		"--until", fmt.Sprint(time.Now().Add(time.Second).Unix()),
		"--filter", "type=container", "--filter", "event=create",
		"--filter", "label=org.rootswap.export="+testimage.ImageID(t, image),
		"--format", "{{.ID}}").CombinedOutput()
	if err != nil {
		t.Fatalf("docker events: %v\n%s", err, out)
	}
	return len(strings.Fields(string(out)))
}

var dateLine = regexp.MustCompile(`^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \w+ \d{4}$`)

// clockScript ends on SIGTERM, as a service should: the stop nspawn passes
// on (--kill-signal=SIGTERM) ends it within a second, not after
// TimeoutStopSec=.
const clockScript = "#!/bin/sh\ntrap 'exit 0' TERM\nwhile true; do date; sleep 1; done\n"

// TestSdbedSeedScenario: the README's seed scenario under a real systemd.
// A unit for an image whose /run.sh prints the date every second starts,
// journalctl -u shows the dates, and machinectl inside the bed lists and
// shows the machine (nspawn registered with machined).
func TestSdbedSeedScenario(t *testing.T) {
	needIntegration(t)
	start := time.Now()
	img := payloadImage(t, clockScript)
	b := bootBed(t)
	unit := b.install("clock", nil, "clock", img, "--", "/bin/sh", "/run.sh")
	started := time.Now()
	b.ok("systemctl", "start", unit)
	dates := b.waitJournal("date lines", 3, 2*time.Minute, func(e journalEntry) bool { return dateLine.MatchString(e.Message) }, "-u", unit)
	t.Logf("first date line %q, %s after systemctl start (import included)", dates[0].Message, dates[0].Realtime.Sub(started).Round(time.Millisecond))

	list := b.ok("machinectl", "list", "--no-legend")
	if !regexp.MustCompile(`(?m)^clock\s+container\s`).MatchString(list) {
		t.Errorf("machinectl list does not show the machine clock:\n%s", list)
	}
	if st := b.ok("machinectl", "status", "clock", "--no-pager"); !strings.Contains(st, unit) {
		t.Errorf("machinectl status clock does not name %s:\n%s", unit, st)
	}
	if got := b.ok("systemctl", "is-active", unit); strings.TrimSpace(got) != "active" {
		t.Errorf("%s is %q", unit, got)
	}
	t.Logf("whole test: %s", time.Since(start).Round(100*time.Millisecond))
}

// TestSdbedRestartAlwaysIsCacheHit: a payload that exits after a moment is
// restarted by systemd (Restart=always); the first start imports the image,
// every restart after it is a cache hit: Docker creates no container from
// the image, the store holds one tree, and prepare says "unchanged". The
// time from each start to the payload's first line is printed.
func TestSdbedRestartAlwaysIsCacheHit(t *testing.T) {
	needIntegration(t)
	const starts = 4 // under systemd's default StartLimitBurst=5 per 10 s
	testStart := time.Now()
	img := payloadImage(t, "#!/bin/sh\necho \"payload run $(date +%s)\"\nsleep 1\n")
	b := bootBed(t)
	unit := b.install("loop", nil, "--restart-sec", "1s", "loop", img, "--", "/bin/sh", "/run.sh")
	started := time.Now()
	b.ok("systemctl", "start", unit)
	isRun := func(e journalEntry) bool { return strings.HasPrefix(e.Message, "payload run ") }
	b.waitJournal("payload runs", 1, 2*time.Minute, isRun, "-u", unit)
	afterFirst := time.Now()
	b.waitJournal("payload runs", starts, 2*time.Minute, isRun, "-u", unit)
	b.ok("systemctl", "stop", unit)

	// Pair each payload's first line with the "Starting" systemd logged
	// before it: the start-to-first-line latency, prepare included.
	var lastStart time.Time
	n := 0
	for _, e := range b.journal("-u", unit) {
		switch {
		case strings.HasPrefix(e.Message, "Starting "+unit):
			lastStart = e.Realtime
		case isRun(e):
			n++
			from := lastStart
			if n == 1 {
				from = started
			}
			t.Logf("start %d: first payload line %s after %s", n, e.Realtime.Sub(from).Round(time.Millisecond), map[bool]string{true: "systemctl start", false: "systemd's Starting"}[n == 1])
		}
	}
	if n := exports(t, img, started); n != 1 {
		t.Errorf("Docker created %d export containers for %s in all, want 1 (the first start)", n, img)
	}
	if c := exports(t, img, afterFirst); c != 0 {
		t.Errorf("Docker created %d containers from %s after the first start; restarts must be cache hits", c, img)
	}
	var imported, unchanged int
	for _, e := range b.journal("-u", unit) {
		if strings.HasPrefix(e.Message, "imported ") || strings.Contains(e.Message, "(imported") {
			imported++
		}
		if strings.Contains(e.Message, "(unchanged)") {
			unchanged++
		}
	}
	if imported == 0 || unchanged < starts-1 {
		t.Errorf("journal: %d import lines, %d unchanged prepares; want imports on the first start only and %d unchanged", imported, unchanged, starts-1)
	}
	s := &store{t: t, root: b.store}
	if imgs := s.images(); len(imgs) != 1 {
		t.Errorf("store holds %d images, want 1", len(imgs))
	}
	trees, _ := filepath.Glob(filepath.Join(b.store, "trees", "sha256", "*"))
	if len(trees) != 1 {
		t.Errorf("store holds %d trees, want 1: %v", len(trees), trees)
	}
	t.Logf("whole test: %s", time.Since(testStart).Round(100*time.Millisecond))
}

// TestSdbedStartsFromCacheWithoutDocker: with the unit's DOCKER_HOST
// pointing at a dead socket (a drop-in; the shared dockerd keeps running),
// the unit still starts from the cached tree.
func TestSdbedStartsFromCacheWithoutDocker(t *testing.T) {
	needIntegration(t)
	img := payloadImage(t, clockScript)
	b := bootBed(t)
	unit := b.install("clock", nil, "clock", img, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	isDate := func(e journalEntry) bool { return dateLine.MatchString(e.Message) }
	b.waitJournal("date lines", 1, 2*time.Minute, isDate, "-u", unit)
	b.ok("systemctl", "stop", unit)
	before := len(b.journal("-u", unit))

	b.writeFile("/etc/systemd/system/"+unit+".d/dead-docker.conf", "[Service]\nEnvironment=DOCKER_HOST=unix:///run/rootswap-test-no-docker.sock\n")
	b.ok("systemctl", "daemon-reload")
	b.ok("systemctl", "start", unit)
	b.waitFor("a date line after the start without Docker", 2*time.Minute, func() bool {
		for _, e := range b.journal("-u", unit)[before:] {
			if isDate(e) {
				return true
			}
		}
		return false
	})
	var warned bool
	for _, e := range b.journal("-u", unit)[before:] {
		warned = warned || strings.Contains(e.Message, "rootswap-test-no-docker.sock")
	}
	if !warned {
		t.Errorf("prepare did not say Docker was unreachable")
	}
	if got := b.ok("systemctl", "is-active", unit); strings.TrimSpace(got) != "active" {
		t.Errorf("%s is %q without Docker", unit, got)
	}
}

// stopPost is a drop-in whose ExecStopPost records what systemd tells it.
const stopPost = `[Service]
ExecStopPost=/bin/sh -c 'echo "SERVICE_RESULT=$SERVICE_RESULT EXIT_CODE=$EXIT_CODE EXIT_STATUS=$EXIT_STATUS" >> /run/stoppost.log'
`

type bedHistoryRow struct {
	Generation uint64 `json:"generation"`
	Failures   int    `json:"failures"`
	LastResult string `json:"last_result"`
	Health     string `json:"health"`
	Current    bool   `json:"current"`
}

func (b *bed) history(name string) bedHistoryRow {
	b.t.Helper()
	var rows []bedHistoryRow
	if err := json.Unmarshal([]byte(b.rootswap("history", name, "--json")), &rows); err != nil {
		b.t.Fatal(err)
	}
	for _, r := range rows {
		if r.Current {
			return r
		}
	}
	b.t.Fatalf("history %s: no current generation", name)
	return bedHistoryRow{}
}

// stopPosts waits for n ExecStopPost records and returns them.
func (b *bed) stopPosts(n int) []string {
	b.t.Helper()
	var lines []string
	b.waitFor(fmt.Sprintf("%d ExecStopPost records", n), 2*time.Minute, func() bool {
		out, code := b.run("cat", "/run/stoppost.log")
		lines = strings.Split(strings.TrimSpace(out), "\n")
		return code == 0 && len(lines) >= n
	})
	return lines
}

// TestSdbedPayloadFailureIsAFailure encodes what is right today: a payload
// that exits non-zero ends the unit with exit-code/exited/STATUS, nspawn
// passes the status on, and report counts it as a failure.
func TestSdbedPayloadFailureIsAFailure(t *testing.T) {
	needIntegration(t)
	img := payloadImage(t, "#!/bin/sh\necho payload up\nsleep 1\nexit 3\n")
	b := bootBed(t)
	unit := b.install("fail", map[string]string{"stoppost.conf": stopPost}, "--restart-sec", "1h", "fail", img, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	got := b.stopPosts(1)
	if got[0] != "SERVICE_RESULT=exit-code EXIT_CODE=exited EXIT_STATUS=3" {
		t.Errorf("ExecStopPost saw %q", got[0])
	}
	b.waitFor("report's record", time.Minute, func() bool { return b.history("fail").LastResult != "" })
	if h := b.history("fail"); h.Failures != 1 || h.LastResult != "exit-code exited 3" || h.Health != "failing" {
		t.Errorf("history after a payload exit 3: %+v", h)
	}
	if j := b.ok("journalctl", "-u", unit, "--no-pager", "-o", "cat"); !strings.Contains(j, "failed with error code 3") {
		t.Errorf("nspawn did not report the payload's status:\n%s", j)
	}
}

// ignoreTermScript is a shell without a trap: as the container's PID 1
// (--no-init) it ignores SIGTERM, so only the stop timeout ends it; under
// rootswap's init, a child, it dies of the SIGTERM at once.
const ignoreTermScript = "#!/bin/sh\necho payload up\nwhile true; do date; sleep 1; done\n"

// TestSdbedOperatorStopIsNotAFailure (issue 12 item 2): systemctl restart
// and machinectl terminate are an operator's stops, never failures, even
// when the payload ignores SIGTERM and systemd ends it by SIGKILL after
// TimeoutStopSec=: three restarts and a terminate leave the generation
// without failures.
func TestSdbedOperatorStopIsNotAFailure(t *testing.T) {
	needIntegration(t)
	img := payloadImage(t, ignoreTermScript)
	b := bootBed(t)
	unit := b.install("op", map[string]string{"stoppost.conf": stopPost, "nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--stop-timeout", "2s", "op", img, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	isUp := func(e journalEntry) bool { return e.Message == "payload up" }
	b.waitJournal("payload up", 1, 2*time.Minute, isUp, "-u", unit)
	for i := 1; i <= 3; i++ {
		b.ok("systemctl", "restart", unit)
		b.stopPosts(i)
		b.waitJournal("payload up", i+1, 2*time.Minute, isUp, "-u", unit)
	}
	b.ok("machinectl", "terminate", "op")
	posts := b.stopPosts(4)
	t.Logf("ExecStopPost saw:\n%s", strings.Join(posts, "\n"))
	if h := b.history("op"); h.Failures != 0 || h.Health == "failing" || !strings.HasPrefix(h.LastResult, "stopped:") {
		t.Errorf("after 3 systemctl restarts and a machinectl terminate, history records failures: %+v", h)
	}
}

// TestSdbedGracefulStop (issue 12 item 2): systemctl stop gives a payload
// that handles SIGTERM the signal (and the time TimeoutStopSec= allows)
// before any SIGKILL, and its clean exit is a success.
func TestSdbedGracefulStop(t *testing.T) {
	needIntegration(t)
	img := payloadImage(t, "#!/bin/sh\ntrap 'echo payload got SIGTERM; exit 0' TERM\necho payload up\nwhile true; do sleep 0.2; done\n")
	b := bootBed(t)
	unit := b.install("grace", map[string]string{"stoppost.conf": stopPost}, "grace", img, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitJournal("payload up", 1, 2*time.Minute, func(e journalEntry) bool { return e.Message == "payload up" }, "-u", unit)
	b.ok("systemctl", "stop", unit)
	if got := b.stopPosts(1)[0]; got != "SERVICE_RESULT=success EXIT_CODE=exited EXIT_STATUS=0" {
		t.Errorf("ExecStopPost after a graceful stop saw %q", got)
	}
	var termed bool
	for _, e := range b.journal("-u", unit) {
		termed = termed || e.Message == "payload got SIGTERM"
	}
	if !termed {
		t.Errorf("the payload never got SIGTERM")
	}
	if h := b.history("grace"); h.Failures != 0 {
		t.Errorf("history after a graceful stop: %+v", h)
	}
}

// TestSdbedOperatorRestartsDoNotRollBack (issue 12 items 2 and 3): three
// systemctl restarts of a freshly upgraded service, whose payload ends
// with status 1 on SIGTERM (a failure by systemd's word) well before it
// could count as healthy, are stops: the unit's prepare does not take
// them for a crash loop and roll back to the healthy generation.
func TestSdbedOperatorRestartsDoNotRollBack(t *testing.T) {
	needIntegration(t)
	good := payloadImage(t, clockScript)
	fresh := payloadImage(t, "#!/bin/sh\ntrap 'exit 1' TERM\necho v2 up\nwhile true; do sleep 0.2; done\n")
	tag, retag := movingTag(t, "rootswap-test/sdbed-restart")
	retag(good)
	b := bootBed(t)
	// v2's runs last from a start to the next restart: far below 1h on
	// any machine, so without the stops counted right they are 3
	// failures in a row; v1 is made healthy by hand below.
	unit := b.install("app", map[string]string{"stoppost.conf": stopPost, "nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--healthy-after", "1h", "--stop-timeout", "5s", "app", tag, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitJournal("date lines", 1, 2*time.Minute, func(e journalEntry) bool { return dateLine.MatchString(e.Message) }, "-u", unit)
	b.ok("systemctl", "stop", unit)
	// v1 healthy: report a long run of it (what an hour up would record).
	b.rootswap("run", "app", "/bin/true") // a start to report
	b.rootswap("report", "--ran-for", "2h", "app")
	if h := b.history("app"); h.Failures != 0 {
		t.Fatalf("v1 after a long run: %+v", h)
	}

	retag(fresh)
	isUp := func(e journalEntry) bool { return e.Message == "v2 up" }
	b.ok("systemctl", "start", unit)
	b.waitJournal("v2 up", 1, 2*time.Minute, isUp, "-u", unit)
	rolledBack := func() bool {
		for _, e := range b.journal("-u", unit) {
			if strings.Contains(e.Message, "rolled back") {
				return true
			}
		}
		return false
	}
	for i := 1; i <= 3 && !rolledBack(); i++ {
		b.ok("systemctl", "restart", unit)
		// v2's next start, or v1's after a rollback.
		b.waitFor("the start after a restart", 2*time.Minute, func() bool {
			n := 0
			for _, e := range b.journal("-u", unit) {
				if isUp(e) {
					n++
				}
			}
			return n > i || rolledBack()
		})
	}
	posts := b.stopPosts(4)
	t.Logf("ExecStopPost saw:\n%s", strings.Join(posts, "\n"))
	for _, e := range b.journal("-u", unit) {
		if strings.Contains(e.Message, "rolled back") {
			t.Errorf("an operator's restarts rolled the upgrade back: %s", e.Message)
		}
	}
	var ms []machineJSON
	if err := json.Unmarshal([]byte(b.rootswap("list", "--json")), &ms); err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Digest != testimage.ImageID(t, fresh) {
		t.Errorf("after 3 restarts machines are %+v, want app still on v2 %s", ms, testimage.ImageID(t, fresh))
	}
	if h := b.history("app"); h.Failures != 0 {
		t.Errorf("history after 3 operator restarts: %+v", h)
	}
}

// TestSdbedUpgradeAndCrashLoopRollback: under systemd, a new image under
// the unit's tag is picked up by the next start and flipped to; when it
// crash-loops, the unit's own ExecStartPre rolls back to the healthy
// generation, with the warning in the journal at warning priority and
// queryable by ROOTSWAP_MACHINE=.
func TestSdbedUpgradeAndCrashLoopRollback(t *testing.T) {
	needIntegration(t)
	good := payloadImage(t, clockScript)
	bad := payloadImage(t, "#!/bin/sh\necho v2 crashing\nexit 1\n")
	tag, retag := movingTag(t, "rootswap-test/sdbed-app")
	retag(good)
	b := bootBed(t)
	// No start rate limit: the crash loop starts the unit 4 times in a few
	// seconds, which is what systemd's default would refuse on a slow day.
	unit := b.install("app", map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--healthy-after", "2s", "--restart-sec", "500ms", "app", tag, "--", "/bin/sh", "/run.sh")
	isDate := func(e journalEntry) bool { return dateLine.MatchString(e.Message) }
	b.ok("systemctl", "start", unit)
	b.waitJournal("date lines", 3, 2*time.Minute, isDate, "-u", unit) // > 2 s up: healthy
	goodID := testimage.ImageID(t, good)

	retag(bad)
	b.ok("systemctl", "restart", unit)
	warn := b.waitRolledBack(unit, "app", goodID)
	if p := fmt.Sprint(warn.Fields["PRIORITY"]); p != "4" {
		t.Errorf("rollback logged at priority %s, want 4 (warning)", p)
	}
	if h := b.rootswap("history", "--healthy-after", "2s", "app"); !strings.Contains(h, "failed") || !strings.Contains(h, "healthy") {
		t.Errorf("history does not show the failed and the healthy generation:\n%s", h)
	}
}

// waitRolledBack waits until unit's payload, the crash-looping
// "v2 crashing" script, has crashed 3 times, rootswap has warned that it
// rolled machine back, and a date line from the clock script of the
// generation it rolled back to has come; then machine must be the only
// one, at digest good. It returns the warning.
func (b *bed) waitRolledBack(unit, machine, good string) journalEntry {
	b.t.Helper()
	b.waitJournal("v2 crashes", 3, 2*time.Minute, func(e journalEntry) bool { return e.Message == "v2 crashing" }, "-u", unit)
	warn := b.waitJournal("rollback warnings", 1, 2*time.Minute, func(e journalEntry) bool {
		return strings.HasPrefix(e.Message, "rolled back a crash-looping generation")
	}, "ROOTSWAP_MACHINE="+machine, "-p", "warning")
	rolledBack := warn[0].Realtime
	b.waitFor("a date line from the rolled-back generation", 2*time.Minute, func() bool {
		for _, e := range b.journal("-u", unit) {
			if dateLine.MatchString(e.Message) && e.Realtime.After(rolledBack) {
				return true
			}
		}
		return false
	})
	var ms []machineJSON
	if err := json.Unmarshal([]byte(b.rootswap("list", "--json")), &ms); err != nil {
		b.t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Name != machine || ms[0].Digest != good {
		b.t.Errorf("after the rollback machines are %+v, want %s on %s", ms, machine, good)
	}
	return warn[0]
}

// TestSdbedNspawnFileMachinectlStart: `unit --nspawn-file` gives NAME.nspawn
// and a systemd-nspawn@NAME.service drop-in; once the machine's tree is
// linked (the first start), `machinectl start NAME` runs the payload from
// the store, machinectl list-images shows the linked tree, and machinectl
// terminate stops it.
func TestSdbedNspawnFileMachinectlStart(t *testing.T) {
	needIntegration(t)
	img := payloadImage(t, clockScript)
	b := bootBed(t)
	b.rootswap("unit", "--install", "--unit-dir", "/etc/systemd/system", "--nspawn-file", "web", img, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "daemon-reload")
	unit := "systemd-nspawn@web.service"
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := b.run("journalctl", "-u", unit, "--no-pager", "-o", "short-precise", "-n", "100")
			t.Logf("journal of %s:\n%s", unit, out)
		}
	})
	// machinectl start refuses a machine whose image does not exist yet, and
	// only the drop-in's ExecStartPre (prepare --link-machines) creates
	// /var/lib/machines/web: the first start goes through systemctl.
	if out, code := b.run("machinectl", "start", "web"); code == 0 || !strings.Contains(out, "does not exist") {
		t.Logf("machinectl start before the first prepare: exit %d %s (it used to refuse: the image is not linked yet)", code, out)
	}
	isDate := func(e journalEntry) bool { return dateLine.MatchString(e.Message) }
	b.ok("systemctl", "start", unit)
	b.waitJournal("date lines", 1, 2*time.Minute, isDate, "-u", unit)
	// terminate, not stop: machinectl stop is a poweroff request
	// (SIGRTMIN+4), which a payload running as PID 1 without a handler
	// ignores (see /work/notes/stop-semantics.md).
	b.ok("machinectl", "terminate", "web")
	b.waitFor("web stopped", 2*time.Minute, func() bool {
		out, _ := b.run("systemctl", "is-active", unit)
		return strings.TrimSpace(out) != "active" && strings.TrimSpace(out) != "deactivating"
	})
	before := len(b.journal("-u", unit))
	b.ok("machinectl", "start", "web")
	b.waitFor("a date line after machinectl start", 2*time.Minute, func() bool {
		for _, e := range b.journal("-u", unit)[before:] {
			if isDate(e) {
				return true
			}
		}
		return false
	})
	if l := b.ok("machinectl", "list", "--no-legend"); !regexp.MustCompile(`(?m)^web\s+container\s`).MatchString(l) {
		t.Errorf("machinectl list does not show web:\n%s", l)
	}
	if l := b.ok("machinectl", "list-images", "--no-legend"); !regexp.MustCompile(`(?m)^web\s`).MatchString(l) {
		t.Errorf("machinectl list-images does not show web:\n%s", l)
	}
	b.ok("machinectl", "terminate", "web")
	b.waitFor("web stopped", 2*time.Minute, func() bool {
		out, _ := b.run("systemctl", "is-active", unit)
		return strings.TrimSpace(out) != "active" && strings.TrimSpace(out) != "deactivating"
	})
}

// movingTag is a tag of the test's own under repo, removed when the test
// ends, and a func that points it at another image (an upgrade under the
// same tag, as a registry's :stable moves).
func movingTag(t *testing.T, repo string) (string, func(img string)) {
	tag := fmt.Sprintf("%s:%d", repo, time.Now().UnixNano())
	t.Cleanup(func() { exec.Command("docker", "rmi", tag).Run() })
	return tag, func(img string) {
		t.Helper()
		if out, err := exec.Command("docker", "tag", img, tag).CombinedOutput(); err != nil {
			t.Fatalf("docker tag: %v\n%s", err, out)
		}
	}
}
