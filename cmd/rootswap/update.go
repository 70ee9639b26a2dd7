package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/snapshot"
)

func updateCmd(g *globals) *cobra.Command {
	var (
		opt    activate.UpdateOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "update [NAME…]",
		Short: "Fetch new image versions while services run, restart them, roll back on failure",
		Long: `Update brings each machine named (no NAME: every machine marked with
unit --auto-update) to what its image reference names now: the reference its
last prepare used. The reference is resolved once however many machines
follow it (a registry is asked, --pull style); a new digest is imported while
the service keeps running, once for all its machines.

Then, for a machine whose unit runs (rootswap-NAME.service, or
systemd-nspawn@NAME.service from unit --nspawn-file), the machine is flipped to
the new tree and the unit restarted through systemd's D-Bus API; its
ExecStartPre finds the tree current. The restart must pass a health gate: the
restart job done within --deadline (for a Type=notify unit, after READY=1),
then the unit active, without stopping or restarting, for --healthy-after
(default: the unit's ROOTSWAP_HEALTHY_AFTER, else 30s). A failed gate rolls
back at once: the machine flips to the tree it ran before, the new digest is
marked failed (prepare and update decline it until the reference names
another digest; prepare --force takes it), the unit is restarted, and the
line says how the new version failed; the journal gets a warning with
ROOTSWAP_MACHINE=. Restarts go --max-parallel at a time; a failed gate stops
the rollout, and the machines not restarted yet stay on their version.

A machine whose unit is not running, or that has no unit, is only fetched:
the next start applies it. When systemd cannot be reached the new version is
fetched and the line says that the restart was not done. A source that is
down or refuses fails the machine with nothing restarted. One update runs at
a time per store: a second waits up to --lock-timeout, then exits 75.

Exit status: 0 when every machine is up to date, updated, fetched or
declines the new version; 1 when any failed (its line says why).`,
		Example: `  rootswap update web
  rootswap update --dry-run
  rootswap update --max-parallel 2 --healthy-after 10s --json web api worker`,
		ValidArgsFunction: g.complete("machine"),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range args {
				if err := activate.ValidName(n); err != nil {
					return err
				}
			}
			if opt.MaxParallel < 1 {
				return usage("update --max-parallel %d: want at least 1", opt.MaxParallel)
			}
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			var opened []snapshot.Source
			defer func() {
				for _, src := range opened {
					closeSource(src)
				}
			}()
			sources := func(ref string) (snapshot.Ref, snapshot.Source, error) {
				r, err := recordedImage(ref)
				if err != nil {
					return r, nil, err
				}
				src, err := g.newSource(s, r)
				if err == nil {
					opened = append(opened, src)
				}
				return r, src, err
			}
			opt.Progress = func(ref string) snapshot.Progress { return g.importProgress(ref) }
			opt.Platform = g.platform
			if opt.Admit, opt.Readmit, err = g.admit(); err != nil {
				return err
			}
			res, err := activate.Update(cmd.Context(), s, sources, g.log, args, opt)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case asJSON:
				if res == nil {
					res = []activate.UpdateResult{}
				}
				if err := printJSON(out, res); err != nil {
					return err
				}
			case len(res) == 0:
				fmt.Fprintln(out, "no machine to update: none is marked with unit --auto-update")
			case opt.DryRun:
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "MACHINE\tIMAGE\tUNIT\tRUNNING\tNEW\tACTION")
				for _, r := range res {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Image, dash(r.Unit), shortOrDash(r.Running), shortOrDash(r.New), r.Done)
				}
				if err := w.Flush(); err != nil {
					return err
				}
			default:
				for _, r := range res {
					fmt.Fprintln(out, r)
				}
			}
			failed := 0
			for _, r := range res {
				if r.Failed {
					failed++
				}
			}
			if failed > 0 {
				return fmt.Errorf("update: %d of %d machines failed (see above)", failed, len(res))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opt.DryRun, "dry-run", false, "print each machine, its image, running and new digest and what update would do; change nothing")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.IntVar(&opt.MaxParallel, "max-parallel", 1, "machines restarted at once")
	f.DurationVar(&opt.HealthyAfter, "healthy-after", 0, "how long a restarted unit must stay up (default: the unit's ROOTSWAP_HEALTHY_AFTER, else 30s)")
	f.DurationVar(&opt.Deadline, "deadline", activate.DefaultUpdateDeadline, "how long a restart may take to start the unit (prepare, start, READY=1)")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortOrDash(d digest.Digest) string {
	if d == "" {
		return "-"
	}
	return short(d)
}
