package activate

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// TestOutcome: a requested stop is a stop whatever systemd says about the
// main process; without one, $SERVICE_RESULT decides, and without that
// (not run by systemd) $EXIT_STATUS.
func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		stop               bool
		result, code, stat string
		want               RunOutcome
	}{
		// What the bed measured for stop/restart/terminate/shutdown, and
		// what a payload that handles SIGTERM can end with.
		{true, "exit-code", "exited", "1", Stopped},
		{true, "exit-code", "exited", "143", Stopped},
		{true, "success", "exited", "0", Stopped},
		{true, "timeout", "killed", "KILL", Stopped},
		{true, "signal", "killed", "TERM", Stopped},
		{true, "", "", "1", Stopped},
		{true, "", "", "", Stopped},
		// systemd's OOMPolicy=stop stops the unit after an OOM kill: the
		// stop record is the kill's consequence, not an operator's.
		{true, "oom-kill", "killed", "KILL", Failure},
		{true, "oom-kill", "exited", "1", Failure},
		// No stop requested: the payload's or the container's own end.
		{false, "exit-code", "exited", "1", Failure}, // nspawn's 1: OOM kill, SIGKILL from inside, a container that cannot start
		{false, "exit-code", "exited", "3", Failure},
		{false, "exit-code", "exited", "143", Failure},
		{false, "signal", "killed", "KILL", Failure},
		{false, "oom-kill", "killed", "KILL", Failure},
		{false, "core-dump", "dumped", "SEGV", Failure},
		{false, "timeout", "killed", "KILL", Failure},
		{false, "watchdog", "killed", "ABRT", Failure},
		{false, "success", "exited", "0", Success},
		{false, "", "", "1", Failure},
		{false, "", "", "0", Success},
		{false, "", "", "", Success},
	} {
		r := RunResult{ServiceResult: tc.result, ExitCode: tc.code, ExitStatus: tc.stat, StopRequested: tc.stop}
		if got := r.Outcome(); got != tc.want {
			t.Errorf("%+v: %s, want %s", r, got, tc.want)
		}
		if r.Failed() != (tc.want == Failure) {
			t.Errorf("%+v: Failed() = %v for %s", r, r.Failed(), tc.want)
		}
	}
}

// TestReportStopRecord: run's stop record for the very run being reported
// makes report record a stop: no failure counted, none forgiven, the
// record consumed. A record about another run (another start, another
// generation) changes nothing and is consumed too.
func TestReportStopRecord(t *testing.T) {
	stopDir = t.TempDir()
	t.Cleanup(func() { stopDir = "/run/rootswap/stop" })
	ctx := context.Background()
	s := newStore(t)
	if _, _, err := Activate(ctx, s, "m", importTree(t, s, "v1"), "", "test"); err != nil {
		t.Fatal(err)
	}
	exit1 := RunResult{ServiceResult: "exit-code", ExitCode: "exited", ExitStatus: "1"}
	// run: the start it records and, on SIGTERM, its record.
	run := func(stopped bool, tweak func(*stopRecord)) time.Time {
		t.Helper()
		start := time.Now().Add(-time.Second).UTC()
		g, err := updateCurrent(s, "m", func(g *index.Generation) { g.Starts++; g.LastStart = start })
		if err != nil {
			t.Fatal(err)
		}
		if stopped {
			rec := stopRecord{Generation: g.Number, Started: start, Signal: "terminated", At: time.Now(), PID: 1}
			if tweak != nil {
				tweak(&rec)
			}
			if err := writeStop(s, "m", rec); err != nil {
				t.Fatal(err)
			}
		}
		return start
	}
	report := func(r RunResult) (index.Generation, RunResult) {
		t.Helper()
		g, got, err := Report(s, "m", r, DefaultHealthyAfter, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(stopPath(s, "m")); !os.IsNotExist(err) {
			t.Errorf("the stop record is still there after report: %v", err)
		}
		return g, got
	}

	run(false, nil)
	if g, _ := report(exit1); g.Failures != 1 {
		t.Fatalf("a crash without a stop record: %d failures, want 1", g.Failures)
	}
	for i := 0; i < 3; i++ {
		run(true, nil)
		g, r := report(exit1)
		if r.Outcome() != Stopped || g.Failures != 1 || g.LastResult != "stopped: exit-code exited 1" {
			t.Fatalf("stop %d: %s, %d failures, last %q; want a stop that leaves the 1 failure as it was", i, r.Outcome(), g.Failures, g.LastResult)
		}
	}
	// Records about another run do not count.
	for what, tweak := range map[string]func(*stopRecord){
		"an earlier start":       func(r *stopRecord) { r.Started = r.Started.Add(-time.Minute) },
		"another generation":     func(r *stopRecord) { r.Generation++ },
		"a start never recorded": func(r *stopRecord) { r.Started = time.Time{} },
	} {
		run(true, tweak)
		if g, r := report(exit1); r.Outcome() != Failure || g.Failures < 2 {
			t.Errorf("a record about %s: %s, %d failures; want a failure", what, r.Outcome(), g.Failures)
		}
	}
	// A report with no run to count still consumes the record.
	writeStop(s, "m", stopRecord{Generation: 1})
	if _, _, err := Report(s, "m", exit1, DefaultHealthyAfter, time.Now()); err == nil {
		t.Fatal("a report without a run recorded one")
	}
	if _, err := os.Stat(stopPath(s, "m")); !os.IsNotExist(err) {
		t.Errorf("a report without a run left the stop record: %v", err)
	}
}

// fakeJobs is systemd's job queue as a unit's ExecStopPost sees it.
type fakeJobs struct {
	jobs []sddbus.JobStatus
	err  error
}

func (f fakeJobs) ListJobsContext(context.Context) ([]sddbus.JobStatus, error) { return f.jobs, f.err }

// TestStopJob: a stop or restart job of the unit itself is an operator's
// stop (what the bed showed during ExecStopPost for systemctl stop and
// restart, machinectl terminate and a shutdown); no job (a payload's exit,
// a kill, Restart= after a crash: its restart job comes after
// ExecStopPost), another unit's job or a start of this one is not; an
// unanswered question is no stop, and an error naming the unit.
func TestStopJob(t *testing.T) {
	const u = "systemd-nspawn@web.service"
	job := func(unit, typ string) sddbus.JobStatus {
		return sddbus.JobStatus{Unit: unit, JobType: typ, Status: "running"}
	}
	for _, tc := range []struct {
		what string
		jobs []sddbus.JobStatus
		want bool
	}{
		{"no job: the run's own end", nil, false},
		{"systemctl stop, machinectl terminate", []sddbus.JobStatus{job(u, "stop")}, true},
		{"systemctl restart, among the jobs it pulls in",
			[]sddbus.JobStatus{job("modprobe@tun.service", "start"), job("var-lib-machines.mount", "start"), job(u, "restart")}, true},
		{"shutdown", []sddbus.JobStatus{job("poweroff.target", "start"), job(u, "stop")}, true},
		{"try-restart", []sddbus.JobStatus{job(u, "try-restart")}, true},
		{"reload-or-restart", []sddbus.JobStatus{job(u, "reload-or-restart")}, true},
		{"a start of the unit", []sddbus.JobStatus{job(u, "start")}, false},
		{"another machine's stop", []sddbus.JobStatus{job("systemd-nspawn@web2.service", "stop")}, false},
	} {
		got, err := stopJob(context.Background(), fakeJobs{jobs: tc.jobs}, u)
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.what, got, err, tc.want)
		}
	}
	got, err := stopJob(context.Background(), fakeJobs{err: errors.New("connection refused")}, u)
	if got || err == nil || !strings.Contains(err.Error(), u) {
		t.Errorf("systemd unreachable: %v, %v; want false and an error naming %s", got, err, u)
	}
}

// TestRecordStartThenReport: RecordStart gives report a run to count,
// once; a stop job makes it a stop, and without one a failure counts. A
// machine with no current tree records nothing.
func TestRecordStartThenReport(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := RecordStart(s, "m", io.Discard); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("RecordStart of a machine that does not exist: %v, want ErrNotFound", err)
	}
	if _, _, err := Activate(ctx, s, "m", importTree(t, s, "v1"), "", "test"); err != nil {
		t.Fatal(err)
	}
	exit1 := RunResult{ServiceResult: "exit-code", ExitCode: "exited", ExitStatus: "1"}
	for _, tc := range []struct {
		stop     bool
		want     RunOutcome
		failures int
	}{{true, Stopped, 0}, {false, Failure, 1}, {true, Stopped, 1}, {false, Failure, 2}} {
		if gen, err := RecordStart(s, "m", io.Discard); err != nil || gen != 1 {
			t.Fatalf("RecordStart: %d, %v", gen, err)
		}
		r := exit1
		r.StopRequested = tc.stop
		g, got, err := Report(s, "m", r, DefaultHealthyAfter, time.Now())
		if err != nil || got.Outcome() != tc.want || g.Failures != tc.failures {
			t.Fatalf("report (stop job %v): %s, %d failures, %v; want %s, %d", tc.stop, got.Outcome(), g.Failures, err, tc.want, tc.failures)
		}
		if _, _, err := Report(s, "m", exit1, DefaultHealthyAfter, time.Now()); !errors.Is(err, ErrNoRun) {
			t.Fatalf("a second report of one start: %v, want ErrNoRun", err)
		}
	}
}
