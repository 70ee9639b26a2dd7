package activate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// Health policy defaults: a generation that fails DefaultMaxFailures runs
// in a row without ever staying up DefaultHealthyAfter is crash-looping.
const (
	DefaultHealthyAfter = 30 * time.Second
	DefaultMaxFailures  = 3
)

// RunResult is what systemd tells ExecStopPost about the run that ended.
type RunResult struct {
	ServiceResult string // $SERVICE_RESULT: success, exit-code, signal, timeout, core-dump, watchdog, …
	ExitCode      string // $EXIT_CODE: exited, killed, dumped
	ExitStatus    string // $EXIT_STATUS: a number or a signal name
	// Ran is how long the run lasted, when the reporter knows it. Zero
	// means "it ended just now": systemd starts ExecStopPost right after
	// the main process exits, so the run lasted from the start `run`
	// recorded until the report.
	Ran time.Duration
	// StopRequested says an operator (or shutdown) asked the run to stop:
	// run's stop record, or a stop/restart job of the unit. How nspawn
	// then ended says nothing about the payload: a stop may end in 0, 1,
	// 143 or a timeout, and so may a crash.
	StopRequested bool
}

// RunOutcome is how a run counts for a generation's health.
type RunOutcome int

const (
	Success RunOutcome = iota // ran and ended well: ends a crash loop
	Failure                   // the payload or container failed: counts towards a crash loop
	Stopped                   // an operator stopped it: neither
)

func (o RunOutcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	case Stopped:
		return "stop"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// ErrNoRun is Report's error when no run started since the last report
// (the service failed before `run`, or the run was reported already):
// there is nothing to count, and nothing is recorded.
var ErrNoRun = errors.New("no run started since the last report")

// Outcome classifies the run. An OOM kill is a failure; otherwise a
// requested stop is a stop whatever nspawn's status (SIGKILL after
// TimeoutStopSec= included). Otherwise systemd's
// $SERVICE_RESULT decides; without it (not run by systemd) a non-zero
// $EXIT_STATUS is a failure.
func (r RunResult) Outcome() RunOutcome {
	switch {
	case r.ServiceResult == "oom-kill":
		// With OOMPolicy=stop systemd stops the unit after the kill, so a
		// stop record can follow it: the kill decides.
		return Failure
	case r.StopRequested:
		return Stopped
	case r.ServiceResult != "" && r.ServiceResult != "success",
		r.ServiceResult == "" && r.ExitStatus != "" && r.ExitStatus != "0":
		return Failure
	}
	return Success
}

// Failed reports whether the run failed (Outcome is Failure).
func (r RunResult) Failed() bool { return r.Outcome() == Failure }

func (r RunResult) String() string {
	var parts []string
	for _, p := range []string{r.ServiceResult, r.ExitCode, r.ExitStatus} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	out := strings.Join(parts, " ")
	if out == "" {
		out = "no result"
	}
	if r.StopRequested {
		out = "stopped: " + out
	}
	return out
}

// updateCurrent applies fn to machine name's current generation in one
// transaction.
func updateCurrent(s *cache.Store, name string, fn func(*index.Generation)) (index.Generation, error) {
	var g index.Generation
	err := s.Update(func(tx *index.Tx) error {
		m, err := tx.Machine(name)
		if err != nil {
			return err
		}
		if g, err = tx.Generation(name, m.Current); err != nil {
			return err
		}
		fn(&g)
		return tx.PutGeneration(name, g)
	})
	return g, err
}

// Report records how the current generation's run ended (called by
// `report` as the unit's ExecStopPost) and returns the generation and the
// result as classified. A failed run shorter than healthyAfter counts
// towards a crash loop; a success or a long run ends one; a stop (run's
// stop record for this very run, or r.StopRequested) does neither.
// Each run `run` started is counted once: Report clears its start, and
// returns ErrNoRun when there is none, so a report for a start that
// failed before `run` (or a second report) never counts as a long run.
// The stop record is consumed once the index has the run (or had none).
func Report(s *cache.Store, name string, r RunResult, healthyAfter time.Duration, now time.Time) (index.Generation, RunResult, error) {
	if err := ValidName(name); err != nil {
		return index.Generation{}, r, err
	}
	rec, haveRec, err := readStop(s, name)
	if err != nil {
		return index.Generation{}, r, err
	}
	var g index.Generation
	err = s.Update(func(tx *index.Tx) error {
		m, err := tx.Machine(name)
		if err != nil {
			return err
		}
		if g, err = tx.Generation(name, m.Current); err != nil {
			return err
		}
		if g.LastStart.IsZero() {
			return fmt.Errorf("machine %s: generation %d: %w", name, g.Number, ErrNoRun)
		}
		if haveRec && rec.matches(g) {
			r.StopRequested = true
		}
		recordRun(&g, r, healthyAfter, now)
		return tx.PutGeneration(name, g)
	})
	if haveRec && (err == nil || errors.Is(err, ErrNoRun)) {
		removeStop(s, name)
	}
	return g, r, err
}

// RecordStart records that a run of machine name's current generation
// starts now, as `run` does for its own runs: for a unit whose main
// process is not `run` (systemd-nspawn@NAME.service), as the last
// ExecStartPre, after prepare, so a prepare that fails records no start
// and each start that reaches ExecStart is counted once. Like run's, the
// record is best effort: a busy or damaged index gets a warning on warn and
// generation 0, never an error, so the service still starts. The error is
// for a malformed name or a machine without a current tree.
func RecordStart(s *cache.Store, name string, warn io.Writer) (uint64, error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	_, d, err := TreeFor(s, name)
	if err != nil {
		return 0, err
	}
	return recordStart(s, name, d, warn).gen, nil
}

// recordRun counts the run that started at g.LastStart and ended with r.
func recordRun(g *index.Generation, r RunResult, healthyAfter time.Duration, now time.Time) {
	up := r.Ran
	if up <= 0 {
		up = max(now.Sub(g.LastStart), 0)
	}
	g.LastStart = time.Time{}
	g.LongestRun = max(g.LongestRun, up)
	g.LastResult = r.String()
	switch o := r.Outcome(); {
	case o == Stopped:
		// Neither counts nor forgives: an operator's restarts say nothing
		// about the payload. (A long run still made g healthy above.)
	case o == Failure && up < healthyAfter:
		g.Failures++
	default:
		g.Failures = 0
	}
}

// Healthy reports whether g ever stayed up for healthyAfter.
func Healthy(g index.Generation, healthyAfter time.Duration) bool {
	return g.LongestRun >= healthyAfter
}

// crashLooping reports whether g failed maxFailures runs in a row without
// ever having been healthy.
func crashLooping(g index.Generation, p PrepareOptions) bool {
	return g.Failures >= p.MaxFailures && !Healthy(g, p.HealthyAfter)
}

// autoRollback moves machine name off the crash-looping generation bad to
// the newest healthy generation of another digest, and marks bad's digest
// failed. It returns the generation now current, or false if there is no
// healthy generation to go to.
func autoRollback(ctx context.Context, s *cache.Store, log *slog.Logger, name string, bad index.Generation, p PrepareOptions) (index.Generation, bool, error) {
	gens, _, err := History(s, name)
	if err != nil {
		return index.Generation{}, false, err
	}
	var good index.Generation
	for _, g := range gens {
		if g.Digest != bad.Digest && Healthy(g, p.HealthyAfter) && g.Number > good.Number {
			good = g
		}
	}
	if good.Number == 0 {
		log.Warn("generation is crash-looping and no healthy generation exists to roll back to",
			"machine", name, "generation", bad.Number, "digest", bad.Digest, "failures", bad.Failures)
		return index.Generation{}, false, nil
	}
	why := fmt.Sprintf("crash loop: generation %d failed %d runs in a row (last: %s)", bad.Number, bad.Failures, bad.LastResult)
	if _, err := rollbackFor(ctx, s, name, strconv.FormatUint(good.Number, 10), why); err != nil {
		return index.Generation{}, false, err
	}
	log.Warn("rolled back a crash-looping generation",
		"machine", name, "generation", good.Number, "digest", good.Digest,
		"failed_generation", bad.Number, "failed_digest", bad.Digest, "failures", bad.Failures,
		"healthy_after", p.HealthyAfter)
	return good, true, nil
}

// clearFailed forgets that d failed on machine name (prepare --force).
func clearFailed(s *cache.Store, name string, d digest.Digest) error {
	return s.Update(func(tx *index.Tx) error {
		m, err := tx.Machine(name)
		if err != nil {
			return nil // a new machine has nothing to forget
		}
		if slices.Contains(m.Failed, d) {
			m.Forgive(d)
			return tx.PutMachine(m)
		}
		return nil
	})
}

// DeclinedWhy says why machine m declines d, or "" if it does not.
func DeclinedWhy(m index.Machine, d digest.Digest) string {
	if !slices.Contains(m.Failed, d) {
		return ""
	}
	if w := m.Why[d]; w != "" {
		return w
	}
	return "crash loop" // recorded before reasons were
}
