package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
)

func reportCmd(g *globals) *cobra.Command {
	healthyAfter := activate.DefaultHealthyAfter
	var (
		ranFor time.Duration
		unit   string
		start  bool
	)
	cmd := &cobra.Command{
		Use:   "report NAME",
		Short: "Record how machine NAME's run ended (a unit's ExecStopPost)",
		Long: `Report records $SERVICE_RESULT, $EXIT_CODE and $EXIT_STATUS (which systemd sets
for ExecStopPost) and the run time of NAME's current generation in the index.
A failed run shorter than --healthy-after counts towards a crash loop, which
the next 'rootswap prepare' rolls back. A run an operator stopped (systemctl
stop or restart, machinectl terminate, shutdown: 'rootswap run' got SIGTERM or
SIGINT and left a stop record under /run/rootswap/stop) is a stop, whatever
systemd says about how it ended: never a failure, never counted.

For a unit whose main process is not 'rootswap run' (systemd-nspawn@NAME.service
with the drop-in 'rootswap unit --nspawn-file' writes), 'report --start' as the
last ExecStartPre records the start, and 'report --unit UNIT' as ExecStopPost
asks systemd whether a stop or restart job of UNIT is running (systemctl stop
or restart, machinectl terminate, shutdown): then the run is a stop. After the
run's own end there is no such job. If systemd cannot be asked, report warns
and the status decides.

The run time is from the start 'rootswap run' recorded until now: systemd
starts ExecStopPost right after the main process exits. Each run is counted
once, so a report after a start that failed before 'run' (or a second report)
records nothing. Without $SERVICE_RESULT (not run by systemd) report records
nothing unless --ran-for says how long the run lasted; $EXIT_STATUS then
says whether it failed.

Report exits 0 whenever there is nothing to record (no store, no machine NAME,
no run, not run by systemd), so that it never masks the service's own result;
1 only when the index cannot be read or written, 75 when the store is busy,
2 for a malformed NAME.`,
		Example: `  ExecStopPost=/usr/local/bin/rootswap report web
  EXIT_STATUS=1 rootswap report --ran-for 2s web
  ExecStartPre=/usr/local/bin/rootswap report --start web
  ExecStopPost=/usr/local/bin/rootswap report --unit systemd-nspawn@web.service web`,
		ValidArgsFunction: g.complete("machine"),
		Args:              exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if start {
				if cmd.Flags().Changed("ran-for") || unit != "" {
					return usage("report: --start records a start: no --ran-for or --unit")
				}
				return reportStart(cmd, g, args[0])
			}
			return reportRun(cmd, g, args[0], ranFor, unit, healthyAfter)
		},
	}
	cmd.Flags().DurationVar(&healthyAfter, "healthy-after", healthyAfter, "a run this long is healthy even if it failed (env ROOTSWAP_HEALTHY_AFTER)")
	envFlag(cmd.Flags(), "healthy-after", "ROOTSWAP_HEALTHY_AFTER")
	cmd.Flags().DurationVar(&ranFor, "ran-for", 0, "the run lasted `DURATION` (when not reporting right after it ended)")
	cmd.Flags().StringVar(&unit, "unit", "", "a stop or restart job of `UNIT` running now is an operator's stop (for a unit whose main process is not 'rootswap run')")
	cmd.Flags().BoolVar(&start, "start", false, "record that a run starts now (an ExecStartPre after prepare, for a unit whose main process is not 'rootswap run')")
	return cmd
}

// reportRun records how machine name's run ended, from systemd's
// ExecStopPost environment or ranFor, and prints the outcome. A report with
// nothing to record (not run by systemd, no store, no machine, no run)
// prints why and returns nil, so that it never masks the service's own
// result; an error means the index could not be read or written, or the
// arguments are malformed.
// With unit set, a stop or restart job of unit running now makes the run
// a stop.
func reportRun(cmd *cobra.Command, g *globals, name string, ranFor time.Duration, unit string, healthyAfter time.Duration) error {
	if err := activate.ValidName(name); err != nil {
		return err
	}
	if ranFor < 0 {
		return usage("report: --ran-for %s: must not be negative", ranFor)
	}
	out := cmd.OutOrStdout()
	nothing := func(why string) error {
		fmt.Fprintf(out, "%s: %s: nothing recorded\n", name, why)
		return nil
	}
	r := activate.RunResult{ServiceResult: os.Getenv("SERVICE_RESULT"), ExitCode: os.Getenv("EXIT_CODE"), ExitStatus: os.Getenv("EXIT_STATUS"), Ran: ranFor}
	if r.ServiceResult == "" && ranFor == 0 {
		return nothing("not run by systemd ($SERVICE_RESULT unset) and no --ran-for")
	}
	if unit != "" {
		r.StopRequested = stopJob(cmd.Context(), g, name, unit)
	}
	s, err := g.open(cmd.Context())
	if errors.Is(err, cache.ErrNoStore) {
		return nothing(err.Error())
	}
	if err != nil {
		return err
	}
	gen, r, err := activate.Report(s, name, r, healthyAfter, time.Now().UTC())
	if errors.Is(err, cache.ErrNotFound) || errors.Is(err, activate.ErrNoRun) {
		return nothing(err.Error())
	}
	if err != nil {
		return err
	}
	g.log.Debug("run reported", "machine", name, "generation", gen.Number, "digest", gen.Digest, "result", r.String(), "failures", gen.Failures)
	if r.Failed() {
		g.log.Warn("run failed", "machine", name, "generation", gen.Number, "digest", gen.Digest, "result", r.String(), "failures", gen.Failures)
	}
	fmt.Fprintf(out, "%s: generation %d: %s: %s (%d failed in a row)\n", name, gen.Number, r.Outcome(), r, gen.Failures)
	return nil
}

// stopJobTimeout bounds the question to systemd: ExecStopPost holds up the
// unit's next start, and an unanswered question is a warning.
const stopJobTimeout = 10 * time.Second

// stopJob asks systemd whether a stop or restart job of unit is running.
// No answer is no stop (the status decides), with a warning.
func stopJob(ctx context.Context, g *globals, name, unit string) bool {
	ctx, cancel := context.WithTimeout(ctx, stopJobTimeout)
	defer cancel()
	stop, err := activate.StopJobRunning(ctx, unit)
	if err != nil {
		g.log.Warn("cannot tell an operator's stop from the run's own end: the status decides", "machine", name, "err", err)
	}
	return stop
}

// reportStart records that machine name's run starts now. Like report, it
// returns nil whenever it records nothing (no store, no machine, a busy
// index), so that it never fails the start; an error is a malformed name.
func reportStart(cmd *cobra.Command, g *globals, name string) error {
	if err := activate.ValidName(name); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	s, err := g.open(cmd.Context())
	if errors.Is(err, cache.ErrNoStore) {
		fmt.Fprintf(out, "%s: %v: no start recorded\n", name, err)
		return nil
	}
	if err != nil {
		// A busy store must not stop the service from starting.
		g.log.Warn("start not recorded", "machine", name, "err", err)
		return nil
	}
	gen, err := activate.RecordStart(s, name, cmd.ErrOrStderr())
	if err != nil {
		// No machine or no tree: nspawn will say so; run's start would not
		// be recorded either.
		fmt.Fprintf(out, "%s: %v: no start recorded\n", name, err)
		return nil
	}
	if gen == 0 {
		fmt.Fprintf(out, "%s: the index did not take the start: no start recorded\n", name)
		return nil
	}
	fmt.Fprintf(out, "%s: generation %d: start recorded\n", name, gen)
	return nil
}
