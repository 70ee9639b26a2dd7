package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
)

func reportCmd(g *globals) *cobra.Command {
	healthyAfter := envDuration("ROOTSWAP_HEALTHY_AFTER", activate.DefaultHealthyAfter)
	var ranFor time.Duration
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
  EXIT_STATUS=1 rootswap report --ran-for 2s web`,
		ValidArgsFunction: g.complete("machine"),
		Args:              exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return reportRun(cmd, g, args[0], ranFor, healthyAfter)
		},
	}
	cmd.Flags().DurationVar(&healthyAfter, "healthy-after", healthyAfter, "a run this long is healthy even if it failed (env ROOTSWAP_HEALTHY_AFTER)")
	cmd.Flags().DurationVar(&ranFor, "ran-for", 0, "the run lasted `DURATION` (when not reporting right after it ended)")
	return cmd
}

// reportRun records how machine name's run ended, from systemd's
// ExecStopPost environment or ranFor, and prints the outcome. A report with
// nothing to record (not run by systemd, no store, no machine, no run)
// prints why and returns nil, so that it never masks the service's own
// result; an error means the index could not be read or written, or the
// arguments are malformed.
func reportRun(cmd *cobra.Command, g *globals, name string, ranFor, healthyAfter time.Duration) error {
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
