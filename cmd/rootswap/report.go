package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
)

func reportCmd(g *globals) *cobra.Command {
	healthyAfter := envDuration("ROOTSWAP_HEALTHY_AFTER", activate.DefaultHealthyAfter)
	cmd := &cobra.Command{
		Use:   "report NAME",
		Short: "Record how machine NAME's run ended (a unit's ExecStopPost)",
		Long: `Report records $SERVICE_RESULT, $EXIT_CODE and $EXIT_STATUS (which systemd sets
for ExecStopPost) and the run time of NAME's current generation in the index.
A failed run shorter than --healthy-after counts towards a crash loop, which
the next 'rootswap prepare' rolls back. It always exits 0 unless the index
cannot be written, so that it never masks the service's own result.`,
		Example:           `  ExecStopPost=/usr/local/bin/rootswap report web`,
		ValidArgsFunction: g.complete("machine"),
		Args:              exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := activate.ValidName(args[0]); err != nil {
				return err
			}
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			r := activate.RunResult{ServiceResult: os.Getenv("SERVICE_RESULT"), ExitCode: os.Getenv("EXIT_CODE"), ExitStatus: os.Getenv("EXIT_STATUS")}
			gen, err := activate.Report(s, args[0], r, healthyAfter, time.Now().UTC())
			if err != nil {
				return err
			}
			g.log.Debug("run reported", "machine", args[0], "generation", gen.Number, "digest", gen.Digest, "result", r.String(), "failures", gen.Failures)
			if r.Failed() {
				g.log.Warn("run failed", "machine", args[0], "generation", gen.Number, "digest", gen.Digest, "result", r.String(), "failures", gen.Failures)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: generation %d: %s (%d failed in a row)\n", args[0], gen.Number, r, gen.Failures)
			return nil
		},
	}
	cmd.Flags().DurationVar(&healthyAfter, "healthy-after", healthyAfter, "a run this long is healthy even if it failed (env ROOTSWAP_HEALTHY_AFTER)")
	return cmd
}
