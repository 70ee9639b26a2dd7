package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// Tests of `rootswap update` under the bed's real systemd: update runs
// inside the bed (as the units and the update timer do), so it reaches
// that systemd's private socket.

// bedDocker points rootswap run by hand in the bed at the Docker socket
// the bed has (nsenter passes the test's own DOCKER_HOST on), where the
// units' rootswap finds it by default.
const bedDocker = "DOCKER_HOST=unix:///run/docker.sock"

// tickScript prints "tick VERSION" every 20 ms and ends on SIGTERM.
func tickScript(version string) string {
	return "#!/bin/sh\ntrap 'exit 0' TERM\nwhile true; do echo \"tick " + version + "\"; sleep 0.02; done\n"
}

// ticks returns the journal times of unit's "tick VERSION" lines (any
// version if version is ""), oldest first.
func (b *bed) ticks(unit, version string) []time.Time {
	b.t.Helper()
	var out []time.Time
	for _, e := range b.journal("-u", unit) {
		if v, ok := strings.CutPrefix(e.Message, "tick "); ok && (version == "" || v == version) {
			out = append(out, e.Realtime)
		}
	}
	return out
}

// waitTicks waits until unit has printed n more "tick VERSION" lines than
// it had at from, and returns the time of the first of them.
func (b *bed) waitTicks(unit, version string, after time.Time, n int) time.Time {
	b.t.Helper()
	var first time.Time
	b.waitFor(fmt.Sprintf("%d %q ticks of %s", n, version, unit), 2*time.Minute, func() bool {
		var got []time.Time
		for _, tt := range b.ticks(unit, version) {
			if tt.After(after) {
				got = append(got, tt)
			}
		}
		if len(got) >= n {
			first = got[0]
			return true
		}
		return false
	})
	return first
}

// outputGap is the longest silence between consecutive tick lines of
// unit printed from `from` to `to`, the window around one restart.
func (b *bed) outputGap(unit string, from, to time.Time) time.Duration {
	b.t.Helper()
	var gap time.Duration
	var prev time.Time
	for _, tt := range b.ticks(unit, "") {
		if tt.Before(from) || tt.After(to) {
			continue
		}
		if !prev.IsZero() && tt.Sub(prev) > gap {
			gap = tt.Sub(prev)
		}
		prev = tt
	}
	return gap
}

// tickSpacing is the median interval between unit's consecutive ticks:
// the measurement's resolution.
func (b *bed) tickSpacing(unit string) time.Duration {
	ts := b.ticks(unit, "")
	var ds []time.Duration
	for i := 1; i < len(ts); i++ {
		ds = append(ds, ts[i].Sub(ts[i-1]))
	}
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// measureGap runs do (a restart of unit, one way or another) and returns
// the longest silence in unit's output around it, once the version want
// prints again.
func (b *bed) measureGap(unit, want string, do func()) time.Duration {
	b.t.Helper()
	start := time.Now()
	do()
	done := time.Now()
	b.waitTicks(unit, want, done, 10)
	return b.outputGap(unit, start.Add(-200*time.Millisecond), time.Now())
}

// TestSdbedUpdateDowntime (issue 18, the first test): a payload that prints
// its version every 20 ms. The silence in its output is measured for a
// plain `systemctl restart` (three times: the spread calibrates the
// margin), for a restart after the tag moved (today's path: the unit's
// prepare exports the new version while the service is down), and for
// `rootswap update` of a new version (exported while the service runs).
// update's silence must not exceed the plain restarts' slowest plus the
// spread and two tick intervals measured in the same run.
func TestSdbedUpdateDowntime(t *testing.T) {
	needIntegration(t)
	v1, v2, v3 := payloadImage(t, tickScript("v1")), payloadImage(t, tickScript("v2")), payloadImage(t, tickScript("v3"))
	tag, retag := movingTag(t, "rootswap-test/sdbed-gap")
	retag(v1)
	b := bootBed(t)
	unit := b.install("tick", map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--stop-timeout", "5s", "tick", tag, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitTicks(unit, "v1", time.Time{}, 10)

	var plain []time.Duration
	for i := 0; i < 3; i++ {
		plain = append(plain, b.measureGap(unit, "v1", func() { b.ok("systemctl", "restart", unit) }))
	}
	retag(v2)
	moved := b.measureGap(unit, "v2", func() { b.ok("systemctl", "restart", unit) })
	retag(v3)
	var out string
	upd := b.measureGap(unit, "v3", func() {
		out = b.ok("env", bedDocker, "/usr/local/bin/rootswap", "--root", b.store, "update", "--healthy-after", "1s", "tick")
	})
	if !strings.Contains(out, "tick: generation 3 "+testimage.ImageID(t, v3)+" (updated; "+unit+" restarted") {
		t.Errorf("update said:\n%s", out)
	}
	spacing := b.tickSpacing(unit)
	sorted := append([]time.Duration(nil), plain...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	margin := sorted[2] - sorted[0] + 2*spacing
	t.Logf("output gap: plain systemctl restart %v (median %v); restart after the tag moved %v; rootswap update %v; tick spacing %v; margin %v",
		plain, sorted[1], moved, upd, spacing, margin)
	if upd > sorted[2]+margin {
		t.Errorf("update's gap %v exceeds the slowest plain restart's %v plus the margin %v", upd, sorted[2], margin)
	}
	if h := b.history("tick"); h.Generation != 3 {
		t.Errorf("current generation after the update: %+v", h)
	}
}

// updateRow is one line of `update --json`.
type updateRow struct {
	Name, Image, Unit, Running, New, Action, Result string
	Generation                                      uint64
	Failed                                          bool
}

// update runs `rootswap update --json ARGS` in the bed and returns its
// rows, its exit status and all it printed.
func (b *bed) update(args ...string) ([]updateRow, int, string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := b.cmd(append([]string{"env", bedDocker, "/usr/local/bin/rootswap", "--root", b.store, "update", "--json"}, args...)...)
	c = exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatalf("update %v: %v", args, err)
	}
	var rows []updateRow
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		b.t.Fatalf("update %v: exit %d, not JSON (%v):\n%s%s", args, code, err, stdout.String(), stderr.String())
	}
	return rows, code, stdout.String() + stderr.String()
}

// TestSdbedUpdateRollsBack (issue 18, the second test): a new version that
// exits at once, and one that exits after 2 s with --healthy-after 5s: each
// update rolls back at once, the old version prints again, history and the
// journal say why, the next update declines the failed digest until the
// tag moves, and prepare declines it too.
func TestSdbedUpdateRollsBack(t *testing.T) {
	needIntegration(t)
	good := payloadImage(t, tickScript("v1"))
	quick := payloadImage(t, "#!/bin/sh\necho v2 exits\nexit 1\n")
	late := payloadImage(t, "#!/bin/sh\ntrap 'exit 0' TERM\necho v3 up\nsleep 2\necho v3 exits\nexit 2\n")
	goodID, quickID, lateID := testimage.ImageID(t, good), testimage.ImageID(t, quick), testimage.ImageID(t, late)
	tag, retag := movingTag(t, "rootswap-test/sdbed-gate")
	retag(good)
	b := bootBed(t)
	unit := b.install("app", map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--restart-sec", "1s", "--stop-timeout", "5s", "app", tag, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitTicks(unit, "v1", time.Time{}, 5)

	for _, c := range []struct {
		img, id, how string
	}{
		{quick, quickID, "exits at once"},
		{late, lateID, "exits after 2s"},
	} {
		retag(c.img)
		start := time.Now()
		rows, code, out := b.update("--healthy-after", "5s", "app")
		took := time.Since(start)
		t.Logf("update to a version that %s: exit %d after %v: %s", c.how, code, took.Round(time.Millisecond), rows[0].Result)
		if !strings.Contains(out, `level=WARN msg="update failed its health gate; rolling back" machine=app`) {
			t.Errorf("no warning naming the machine:\n%s", out)
		}
		if code != 1 || len(rows) != 1 || !rows[0].Failed || !strings.Contains(rows[0].Result, "rolled back to generation 1 "+goodID) ||
			!strings.Contains(rows[0].Result, c.id) {
			t.Fatalf("update to a version that %s: exit %d\n%s", c.how, code, out)
		}
		b.waitTicks(unit, "v1", start.Add(took), 5)
		var ms []machineJSON
		if err := json.Unmarshal([]byte(b.rootswap("list", "--json")), &ms); err != nil || ms[0].Digest != goodID {
			t.Fatalf("after the rollback: %+v %v", ms, err)
		}
		var hist []struct {
			Digest, Health, Declined, Reason string
		}
		if err := json.Unmarshal([]byte(b.rootswap("history", "app", "--json")), &hist); err != nil {
			t.Fatal(err)
		}
		var why string
		for _, h := range hist {
			if h.Digest == c.id {
				why = h.Declined
				if h.Reason != "update" {
					t.Errorf("history: the update's generation has reason %q", h.Reason)
				}
			}
		}
		if !strings.HasPrefix(why, "update health gate: ") {
			t.Errorf("history does not say why %s is declined: %q", c.id, why)
		}
		t.Logf("history: %s declined: %s", c.id, why)
		// The next update does nothing while the tag names the failed digest.
		rows, code, out = b.update("--healthy-after", "5s", "app")
		if code != 0 || rows[0].Action != "decline" || rows[0].Failed {
			t.Errorf("update after the rollback: exit %d\n%s", code, out)
		}
		if p := b.ok("env", bedDocker, "/usr/local/bin/rootswap", "--root", b.store, "prepare", "app", tag); !strings.Contains(p, "declined") {
			t.Errorf("prepare after the rollback: %s", p)
		}
	}
	if c := b.history("app"); c.Generation != 1 {
		t.Errorf("current generation after both rollbacks: %+v", c)
	}
}

// lastJournal returns the time of the last entry of unit whose message
// starts with prefix, or the zero time.
func (b *bed) lastJournal(unit, prefix string) time.Time {
	b.t.Helper()
	var at time.Time
	for _, e := range b.journal("-u", unit) {
		if strings.HasPrefix(e.Message, prefix) {
			at = e.Realtime
		}
	}
	return at
}

// TestSdbedUpdateTwoMachines (issue 18, items 3, 4 and 6): two machines on
// one tag, one of each unit kind (rootswap-a.service and, from
// --nspawn-file, systemd-nspawn@b.service), both marked --auto-update, and
// the update service --update-timer installs. Started as the timer would,
// it exports the new version once for both and restarts them one at a
// time; the journal has its lines with ROOTSWAP_MACHINE=. A new version
// that fails then rolls a back and leaves b on its version, untouched.
func TestSdbedUpdateTwoMachines(t *testing.T) {
	needIntegration(t)
	v1, v2, bad := payloadImage(t, tickScript("v1")), payloadImage(t, tickScript("v2")), payloadImage(t, "#!/bin/sh\necho v3 exits\nexit 1\n")
	tag, retag := movingTag(t, "rootswap-test/sdbed-two")
	retag(v1)
	b := bootBed(t)
	nolimit := map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"}
	ua := b.install("a", nolimit, "--auto-update", "--healthy-after", "2s", "--restart-sec", "1s", "--stop-timeout", "5s", "a", tag, "--", "/bin/sh", "/run.sh")
	b.rootswap("unit", "--install", "--unit-dir", "/etc/systemd/system", "--nspawn-file", "--auto-update", "--healthy-after", "2s",
		"--restart-sec", "1s", "b", tag, "--", "/bin/sh", "/run.sh")
	ub := "systemd-nspawn@b.service"
	b.writeFile("/etc/systemd/system/"+ub+".d/nolimit.conf", nolimit["nolimit.conf"])
	b.rootswap("unit", "--update-timer", "--install", "--unit-dir", "/etc/systemd/system")
	b.ok("systemctl", "daemon-reload")
	b.ok("systemctl", "enable", "--now", "rootswap-update.timer")
	t.Cleanup(func() {
		if t.Failed() {
			for _, u := range []string{ub, "rootswap-update.service"} {
				out, _ := b.run("journalctl", "-u", u, "--no-pager", "-o", "short-precise", "-n", "80")
				t.Logf("journal of %s:\n%s", u, out)
			}
		}
	})
	b.ok("systemctl", "start", ua, ub)
	b.waitTicks(ua, "v1", time.Time{}, 5)
	b.waitTicks(ub, "v1", time.Time{}, 5)
	if l := b.ok("systemctl", "list-timers", "--all", "--no-pager"); !strings.Contains(l, "rootswap-update.timer") {
		t.Errorf("list-timers lacks the update timer:\n%s", l)
	}

	retag(v2)
	since := time.Now()
	b.ok("systemctl", "start", "rootswap-update.service") // a oneshot: returns when update has
	b.waitTicks(ua, "v2", since, 5)
	b.waitTicks(ub, "v2", since, 5)
	if n := exports(t, v2, since); n != 1 {
		t.Errorf("Docker exported v2 %d times for two machines, want 1", n)
	}
	aUp, bDown := b.lastJournal(ua, "Started "), b.lastJournal(ub, "Stopping ")
	t.Logf("a started %s, b stopping %s later (the gate holds a for 2s first)", aUp.Format("15:04:05.000"), bDown.Sub(aUp).Round(time.Millisecond))
	if !bDown.After(aUp.Add(2 * time.Second)) {
		t.Errorf("b was stopped %v after a started: not one at a time behind a 2s gate", bDown.Sub(aUp))
	}
	for _, m := range []string{"a", "b"} {
		b.waitJournal("update lines", 1, time.Minute, func(e journalEntry) bool { return strings.HasPrefix(e.Message, "updated") },
			"ROOTSWAP_MACHINE="+m)
	}

	retag(bad)
	since = time.Now()
	bStarts := b.lastJournal(ub, "Started ")
	if _, code := b.run("systemctl", "start", "rootswap-update.service"); code == 0 {
		t.Errorf("the update service succeeded with a failing version")
	}
	b.waitTicks(ua, "v2", since, 5) // a rolled back to v2
	b.waitJournal("rollback warnings", 1, time.Minute, func(e journalEntry) bool {
		return strings.HasPrefix(e.Message, "update failed its health gate")
	}, "ROOTSWAP_MACHINE=a", "-p", "warning")
	skipped := b.waitJournal("skip lines", 1, time.Minute, func(e journalEntry) bool {
		return strings.Contains(e.Message, "b: skipped: the rollout stopped after a failed")
	}, "-u", "rootswap-update.service")
	t.Logf("update service: %s", skipped[0].Message)
	if got := b.lastJournal(ub, "Started "); !got.Equal(bStarts) {
		t.Errorf("b was restarted by the failed rollout (started %s, before %s)", got, bStarts)
	}
	var ms []machineJSON
	if err := json.Unmarshal([]byte(b.rootswap("list", "--json")), &ms); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Digest != testimage.ImageID(t, v2) {
			t.Errorf("machine %s is on %s after the failed rollout, want v2", m.Name, m.Digest)
		}
	}
}

// TestSdbedUpdateKilled (issue 18 item 5): update SIGKILLed at each of
// its failpoints: afterwards the unit runs the old or the new version,
// verify finds the index and the links agreeing after the next command,
// and the next update finishes the job (or, after a rollback, keeps the
// old version).
func TestSdbedUpdateKilled(t *testing.T) {
	needIntegration(t)
	tag, retag := movingTag(t, "rootswap-test/sdbed-kill")
	retag(payloadImage(t, tickScript("k0")))
	b := bootBed(t)
	unit := b.install("app", map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--healthy-after", "1s", "--restart-sec", "1s", "--stop-timeout", "5s", "app", tag, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitTicks(unit, "k0", time.Time{}, 5)
	cur := "k0"
	for i, fp := range []string{"update-fetched", "update-activated", "update-restarted", "update-rolled-back"} {
		next := fmt.Sprintf("k%d", i+1)
		img := payloadImage(t, tickScript(next))
		if fp == "update-rolled-back" {
			img = payloadImage(t, "#!/bin/sh\necho "+next+" exits\nexit 1\n")
		}
		retag(img)
		out, code := b.run("env", bedDocker, "ROOTSWAP_FAILPOINT="+fp, "/usr/local/bin/rootswap", "--root", b.store, "update", "app")
		if !strings.Contains(out, "failpoint "+fp) {
			t.Fatalf("%s: update was not killed there: exit %d\n%s", fp, code, out)
		}
		killed := time.Now()
		b.rootswap("list") // the next command
		if out, code := b.run("/usr/local/bin/rootswap", "--root", b.store, "verify"); code != 0 {
			t.Errorf("%s: verify after the kill: exit %d\n%s", fp, code, out)
		}
		// Old or new, and printing.
		var runs string
		b.waitFor(fp+": a version printing", 2*time.Minute, func() bool {
			for _, v := range []string{cur, next} {
				n := 0
				for _, tt := range b.ticks(unit, v) {
					if tt.After(killed) {
						n++
					}
				}
				if n >= 3 {
					runs = v
					return true
				}
			}
			return false
		})
		rows, code, out := b.update("app")
		t.Logf("%s: after the kill %s printed; the next update: exit %d, %s", fp, runs, code, rows[0].Result)
		want := next
		if fp == "update-rolled-back" {
			want = cur
			if code != 0 || rows[0].Action != "decline" {
				t.Errorf("%s: the next update:\n%s", fp, out)
			}
		} else if code != 0 || rows[0].Failed {
			t.Errorf("%s: the next update:\n%s", fp, out)
		}
		b.waitTicks(unit, want, time.Now(), 3)
		if out, code := b.run("/usr/local/bin/rootswap", "--root", b.store, "verify"); code != 0 {
			t.Errorf("%s: verify after the next update: exit %d\n%s", fp, code, out)
		}
		cur = want
	}
}
