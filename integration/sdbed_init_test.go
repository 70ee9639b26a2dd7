package integration

import (
	"strings"
	"testing"
	"time"
)

// rootswap's init under a real systemd (issue 20 item 5): the payload is
// no longer the container's PID 1, so a stop's SIGTERM reaches even a
// payload without a handler, and a restart costs about a second instead
// of the stop timeout. TestSdbedGracefulStop covers a payload that
// handles SIGTERM (it still gets it and ends in a success).

// TestSdbedInitRestartsAtOnce: three `systemctl restart`s of a shell loop
// without a SIGTERM trap (which as PID 1 ignored the stop until the
// timeout) each take far less than the stop timeout, and are stops.
func TestSdbedInitRestartsAtOnce(t *testing.T) {
	needIntegration(t)
	const timeout = 60 * time.Second
	img := payloadImage(t, ignoreTermScript)
	b := bootBed(t)
	unit := b.install("loop", map[string]string{"stoppost.conf": stopPost, "nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--stop-timeout", timeout.String(), "loop", img, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	isUp := func(e journalEntry) bool { return e.Message == "payload up" }
	b.waitJournal("payload up", 1, 2*time.Minute, isUp, "-u", unit)
	for i := 1; i <= 3; i++ {
		start := time.Now()
		b.ok("systemctl", "restart", unit)
		took := time.Since(start)
		b.waitJournal("payload up", i+1, 2*time.Minute, isUp, "-u", unit)
		t.Logf("restart %d: systemctl restart returned after %s, the payload was up again %s after it began",
			i, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if took > timeout/4 {
			t.Errorf("restart %d took %s: the payload did not die of the stop's SIGTERM (stop timeout %s)", i, took.Round(time.Millisecond), timeout)
		}
	}
	posts := b.stopPosts(3)
	t.Logf("ExecStopPost saw:\n%s", strings.Join(posts, "\n"))
	if h := b.history("loop"); h.Failures != 0 || !strings.HasPrefix(h.LastResult, "stopped:") {
		t.Errorf("after 3 restarts through the init, history records failures: %+v", h)
	}
}

// TestSdbedInitTermIgnoredKilledAtTimeout: a payload that ignores SIGTERM
// on purpose (a trap with an empty action, which its children inherit) is killed once the
// stop timeout has passed, not before and not much later, and the stop
// is still a stop.
func TestSdbedInitTermIgnoredKilledAtTimeout(t *testing.T) {
	needIntegration(t)
	const timeout = 3 * time.Second
	img := payloadImage(t, "#!/bin/sh\ntrap '' TERM\necho payload up\nwhile true; do sleep 0.2; done\n")
	b := bootBed(t)
	unit := b.install("deaf", map[string]string{"stoppost.conf": stopPost},
		"--stop-timeout", timeout.String(), "deaf", img, "--", "/bin/sh", "/run.sh")
	b.ok("systemctl", "start", unit)
	b.waitJournal("payload up", 1, 2*time.Minute, func(e journalEntry) bool { return e.Message == "payload up" }, "-u", unit)
	start := time.Now()
	b.ok("systemctl", "stop", unit)
	took := time.Since(start)
	t.Logf("systemctl stop returned after %s (stop timeout %s)", took.Round(time.Millisecond), timeout)
	// run terminates the container at the timeout; systemd's SIGKILL
	// (TimeoutStopSec=, 15 s later) is the backstop that must not be needed.
	if took < timeout || took > timeout+10*time.Second {
		t.Errorf("stop took %s, want the stop timeout %s and a little", took.Round(time.Millisecond), timeout)
	}
	post := b.stopPosts(1)[0]
	t.Logf("ExecStopPost saw %q", post)
	if strings.Contains(post, "SERVICE_RESULT=timeout") {
		t.Errorf("systemd had to kill the unit: %q", post)
	}
	b.waitFor("report's record", time.Minute, func() bool { return b.history("deaf").LastResult != "" })
	if h := b.history("deaf"); h.Failures != 0 || !strings.HasPrefix(h.LastResult, "stopped:") {
		t.Errorf("a stop at the timeout is recorded as a failure: %+v", h)
	}
}
