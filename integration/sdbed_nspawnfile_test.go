package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// The --nspawn-file path under a real systemd: systemd-nspawn@NAME.service
// with rootswap's drop-in, where nspawn, not `rootswap run`, is the main
// process. The drop-in's ExecStartPre records the start after prepare, and
// its ExecStopPost report asks systemd whether a stop or restart job of
// the unit is running (an operator's stop) or not (the run's own end).

// installNspawnFile writes machine name's .nspawn file and drop-in with
// `rootswap unit --install --nspawn-file`, plus drop-ins of the test's own
// (file name → content), reloads systemd and returns the unit's name. A
// failing test prints the unit's journal.
func (b *bed) installNspawnFile(name string, dropins map[string]string, unitArgs ...string) string {
	b.t.Helper()
	return b.installUnit("systemd-nspawn@"+name+".service", dropins, append([]string{"--nspawn-file"}, unitArgs...)...)
}

// TestSdbedNspawnFileCrashLoopRollback: under --nspawn-file a healthy
// generation's run is recorded (its stop by `systemctl restart` too), a
// new image under the tag that crash-loops is counted run by run, and
// the unit's own ExecStartPre rolls back to the healthy generation, with
// the warning queryable by ROOTSWAP_MACHINE=.
func TestSdbedNspawnFileCrashLoopRollback(t *testing.T) {
	needIntegration(t)
	start := time.Now()
	good := payloadImage(t, clockScript)
	bad := payloadImage(t, "#!/bin/sh\necho v2 crashing\nexit 1\n")
	tag, retag := movingTag(t, "rootswap-test/sdbed-nsfile")
	retag(good)
	b := bootBed(t)
	unit := b.installNspawnFile("app", map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--healthy-after", "2s", "--restart-sec", "500ms", "app", tag, "--", "/bin/sh", "/run.sh")
	isDate := func(e journalEntry) bool { return dateLine.MatchString(e.Message) }
	b.ok("systemctl", "start", unit)
	b.waitJournal("date lines", 3, 2*time.Minute, isDate, "-u", unit) // > 2 s up: healthy

	retag(bad)
	b.ok("systemctl", "restart", unit)
	var rows []bedHistoryRow
	if err := json.Unmarshal([]byte(b.rootswap("history", "app", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 || rows[0].Generation != 1 || rows[0].Failures != 0 || !strings.HasPrefix(rows[0].LastResult, "stopped:") {
		t.Errorf("the healthy generation's restart is not recorded as a stop: %+v", rows)
	}
	b.waitRolledBack(unit, "app", testimage.ImageID(t, good))
	b.ok("systemctl", "stop", unit)
	t.Logf("whole test: %s", time.Since(start).Round(100*time.Millisecond))
}

// TestSdbedNspawnFileStopsAreStops: under --nspawn-file, three systemctl
// restarts of a freshly upgraded service, whose payload ends with status
// 1 on SIGTERM (a failure by systemd's word) long before it could be
// healthy, and a machinectl terminate are recorded as stops: no failure
// counted, no rollback to the healthy generation. A payload killed by
// SIGKILL from outside the container, with no job of the unit, stays a
// failure.
func TestSdbedNspawnFileStopsAreStops(t *testing.T) {
	needIntegration(t)
	start := time.Now()
	good := payloadImage(t, clockScript)
	fresh := payloadImage(t, termFailsScript)
	tag, retag := movingTag(t, "rootswap-test/sdbed-nsfile-restart")
	retag(good)
	b := bootBed(t)
	unit := b.installNspawnFile("app", map[string]string{"stoppost.conf": stopPost, "nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--healthy-after", "1h", "--stop-timeout", "20s", "app", tag, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitJournal("date lines", 1, 2*time.Minute, func(e journalEntry) bool { return dateLine.MatchString(e.Message) }, "-u", unit)
	b.ok("systemctl", "stop", unit)
	// v1 healthy: report a long run of it (what an hour up would record).
	b.rootswap("run", "app", "/bin/true") // a start to report
	b.rootswap("report", "--ran-for", "2h", "app")

	retag(fresh)
	isUp := func(e journalEntry) bool { return e.Message == "payload up" }
	ups := func() int {
		n := 0
		for _, e := range b.journal("-u", unit) {
			if isUp(e) {
				n++
			}
		}
		return n
	}
	b.ok("systemctl", "start", unit)
	b.waitJournal("payload up", 1, 2*time.Minute, isUp, "-u", unit)
	for i := 1; i <= 3; i++ {
		b.ok("systemctl", "restart", unit)
		b.waitFor(fmt.Sprintf("start %d after a restart", i+1), 2*time.Minute, func() bool { return ups() > i })
		if h := b.history("app"); h.Failures != 0 || !strings.HasPrefix(h.LastResult, "stopped:") {
			t.Errorf("after systemctl restart %d: %+v", i, h)
		}
	}
	b.ok("machinectl", "terminate", "app")
	posts := b.stopPosts(5)
	t.Logf("ExecStopPost saw:\n%s", strings.Join(posts[1:], "\n"))
	if h := b.history("app"); h.Failures != 0 || h.Health == "failing" || !strings.HasPrefix(h.LastResult, "stopped:") {
		t.Errorf("after 3 systemctl restarts and a machinectl terminate: %+v", h)
	}
	for _, e := range b.journal("-u", unit) {
		if strings.Contains(e.Message, "rolled back") {
			t.Errorf("an operator's restarts rolled the upgrade back: %s", e.Message)
		}
	}
	var ms []machineJSON
	if err := json.Unmarshal([]byte(b.rootswap("list", "--json")), &ms); err != nil {
		t.Fatal(err)
	}
	if freshID := testimage.ImageID(t, fresh); len(ms) != 1 || ms[0].Digest != freshID {
		t.Errorf("machines are %+v, want app still on v2 %s", ms, freshID)
	}

	// SIGKILL to the container's PID 1 from outside it: no job, a failure.
	b.ok("systemctl", "start", unit)
	b.waitFor("start 5", 2*time.Minute, func() bool { return ups() >= 5 })
	b.ok("sh", "-c", "kill -KILL $(machinectl show --property=Leader --value app)")
	t.Logf("ExecStopPost after the SIGKILL: %s", b.stopPosts(6)[5])
	b.waitFor("report's record of the SIGKILL", time.Minute, func() bool { return b.history("app").Failures == 1 })
	if h := b.history("app"); strings.HasPrefix(h.LastResult, "stopped:") || h.Health != "failing" {
		t.Errorf("a payload killed from outside is not a failure: %+v", h)
	}
	b.ok("systemctl", "stop", unit)
	t.Logf("whole test: %s", time.Since(start).Round(100*time.Millisecond))
}

// TestSdbedMachinectlPoweroffIsThePayloads (issue 12 item 2): `machinectl
// poweroff NAME` (and `machinectl stop NAME`, the same request) is
// SIGRTMIN+4 from machined straight to the container's PID 1, the
// payload: no job of the unit, nothing that nspawn or rootswap sees. A
// payload without a handler never gets it (the kernel drops a signal to a
// namespace's init that has none): the machine runs on. A payload that
// handles it and exits 0 has ended cleanly by its own word: report
// records a success, not a stop, and Restart=always starts it again.
// rootswap documents this and points operators at machinectl terminate.
func TestSdbedMachinectlPoweroffIsThePayloads(t *testing.T) {
	needIntegration(t)
	start := time.Now()
	// USR1 is the barrier: the payload answers it, so once its answer is
	// in the journal the poweroff before it has had whatever effect it has.
	deaf := payloadImage(t, "#!/bin/sh\ntrap 'echo got USR1' USR1\ntrap 'exit 0' TERM\necho payload up\nwhile true; do sleep 0.2; done\n")
	handles := payloadImage(t, "#!/bin/sh\ntrap 'echo got poweroff; exit 0' RTMIN+4 2>/dev/null || trap 'echo got poweroff; exit 0' 38\ntrap 'exit 0' TERM\necho payload up\nwhile true; do sleep 0.2; done\n")
	b := bootBed(t)
	dropins := map[string]string{"stoppost.conf": stopPost, "nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"}
	unit := b.installNspawnFile("app", dropins, "--restart-sec", "1s", "app", deaf, "--", "/bin/sh", "/run.sh")
	count := func(msg string) int {
		n := 0
		for _, e := range b.journal("-u", unit) {
			if e.Message == msg {
				n++
			}
		}
		return n
	}
	b.ok("systemctl", "start", unit)
	b.waitFor("payload up", 2*time.Minute, func() bool { return count("payload up") == 1 })
	b.ok("machinectl", "poweroff", "app")
	b.ok("machinectl", "kill", "--kill-whom=leader", "--signal=SIGUSR1", "app")
	b.waitFor("the payload's answer to USR1", 2*time.Minute, func() bool { return count("got USR1") == 1 })
	if out, _ := b.run("systemctl", "is-active", unit); strings.TrimSpace(out) != "active" {
		t.Errorf("after machinectl poweroff of a payload without a handler the unit is %q, want still active", strings.TrimSpace(out))
	}
	if out, code := b.run("cat", "/run/stoppost.log"); code == 0 {
		t.Errorf("the unit stopped on machinectl poweroff of a payload without a handler: %s", out)
	}
	b.ok("systemctl", "stop", unit)
	b.stopPosts(1)

	b.installNspawnFile("app", dropins, "--restart-sec", "1s", "app", handles, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitFor("payload up", 2*time.Minute, func() bool { return count("payload up") == 2 })
	b.ok("machinectl", "poweroff", "app")
	if got := b.stopPosts(2)[1]; got != "SERVICE_RESULT=success EXIT_CODE=exited EXIT_STATUS=0" {
		t.Errorf("ExecStopPost after a handled poweroff saw %q", got)
	}
	b.waitFor("Restart=always's next start", 2*time.Minute, func() bool { return count("payload up") == 3 })
	if h := b.history("app"); h.LastResult != "success exited 0" || h.Failures != 0 {
		t.Errorf("history after a handled poweroff: %+v, want a success", h)
	}
	if count("got poweroff") != 1 {
		t.Errorf("the payload did not see the poweroff")
	}
	b.ok("systemctl", "stop", unit)
	t.Logf("whole test: %s", time.Since(start).Round(100*time.Millisecond))
}
