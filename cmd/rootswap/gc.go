package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/gc"
)

func gcCmd(g *globals) *cobra.Command {
	var (
		opt    gc.Options
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "gc [--keep N] [--unused-for DURATION] [--dry-run] [--json]",
		Short: "Remove trees and objects no machine needs",
		Long: `Gc removes every tree that is not a root, then the cached layers no remaining
tree was built from, every object no remaining tree links and no remaining
layer lists, dead staging under tmp/ and expired leases. Roots are each machine's
current tree, the trees of its N newest generations (--keep, default 3: the
current one and two rollbacks), pinned trees (see pin) and trees a running
process still uses (an nspawn overlay, a bind mount, a cwd or chroot).

With --unused-for, an unreachable tree is removed only once it has not been
activated or run for that long. --dry-run prints the plan a real run would
execute and changes nothing. Gc holds the store lock exclusively while it
runs; imports and activations wait for it.`,
		Example: `  rootswap gc --dry-run
  rootswap gc --keep 5 --unused-for 30d --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opt.Keep < 0 {
				return usage("gc: --keep %d: must be 0 or more", opt.Keep)
			}
			if opt.UnusedFor < 0 {
				return usage("gc: --unused-for %s: must not be negative", opt.UnusedFor)
			}
			// A dry run must not even clean dead staging, as every other
			// command does on open: the plan lists it instead.
			s, err := g.openWith(cmd.Context(), cache.Options{KeepTmp: opt.DryRun})
			if err != nil {
				return err
			}
			rep, err := gc.Collect(cmd.Context(), s, opt)
			if err != nil && nothingDone(rep) {
				// No lock, no index: a "removed 0 tree(s)" line would read
				// as a clean store.
				return err
			}
			if rep.Trees == nil {
				rep.Trees = []gc.RemovedTree{} // JSON lists are [] when empty, never null
			}
			if rep.Layers == nil {
				rep.Layers = []gc.RemovedLayer{}
			}
			if rep.LayerDirs == nil {
				rep.LayerDirs = []gc.RemovedLayerDir{}
			}
			if rep.Kept == nil {
				rep.Kept = []gc.KeptTree{}
			}
			if asJSON {
				if perr := printJSON(cmd.OutOrStdout(), rep); err == nil {
					err = perr
				}
				return err
			}
			printGC(cmd.OutOrStdout(), rep, opt.DryRun)
			return err
		},
	}
	cmd.Flags().IntVar(&opt.Keep, "keep", gc.DefaultKeep, "keep the trees of each machine's `N` newest generations")
	cmd.Flags().Var((*days)(&opt.UnusedFor), "unused-for", "remove an unreachable tree only if unused for `DURATION` (e.g. 30d, 1d12h, 720h)")
	cmd.Flags().BoolVar(&opt.DryRun, "dry-run", false, "print the plan; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// nothingDone reports whether a gc's result records no work, planned or
// done.
func nothingDone(rep gc.Result) bool {
	return len(rep.Trees) == 0 && len(rep.Layers) == 0 && len(rep.LayerDirs) == 0 && len(rep.Kept) == 0 &&
		rep.Objects == 0 && rep.Staging == 0 && rep.Leases == 0 && rep.BytesFreed == 0
}

// printGC prints gc's report as text: one line per tree removed (or, in a
// dry run, that would be removed and kept), then the totals.
func printGC(out io.Writer, rep gc.Result, dryRun bool) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	for _, t := range rep.Trees {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", verb, t.Digest, humanBytes(t.Bytes), t.Reason)
	}
	for _, l := range rep.LayerDirs {
		fmt.Fprintf(w, "%s layer dir\t%s\t%s\t%s\n", verb, l.Chain, humanBytes(l.Bytes), l.Reason)
	}
	for _, l := range rep.Layers {
		fmt.Fprintf(w, "%s layer\t%s\t%s\t%s\n", verb, l.DiffID, humanBytes(l.Bytes), l.Reason)
	}
	if dryRun {
		for _, k := range rep.Kept {
			fmt.Fprintf(w, "keep\t%s\t\t%s\n", k.Digest, k.Why)
		}
	}
	w.Flush()
	layers := ""
	switch {
	case len(rep.LayerDirs) > 0:
		layers = fmt.Sprintf(" (and %d layer dir(s), %d cached layer(s))", len(rep.LayerDirs), len(rep.Layers))
	case len(rep.Layers) > 0:
		layers = fmt.Sprintf(" (and %d cached layer(s))", len(rep.Layers))
	}
	fmt.Fprintf(out, "%s %d tree(s), %d object(s), %d staging dir(s), %d lease(s): %s%s\n",
		verb, len(rep.Trees), rep.Objects, rep.Staging, rep.Leases, humanBytes(rep.BytesFreed), layers)
}

func pinCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pin DIGEST",
		Short: "Keep tree DIGEST through every gc until unpinned",
		Long: `Pin makes the tree DIGEST a gc root: gc never removes it, however old it is and
whether or not a machine uses it. The tree must be in the store.`,
		Example: `  rootswap pin sha256:3f4e5a6b7c8d   # a unique prefix will do`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, d, err := g.storeDigest(cmd, args[0])
			if err != nil {
				return err
			}
			if err := gc.Pin(cmd.Context(), s, d); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pinned %s\n", d)
			return nil
		},
	}
}

func unpinCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unpin DIGEST",
		Short: "Let gc remove tree DIGEST again once nothing else keeps it",
		Long: `Unpin removes the pin on DIGEST. Unpinning a digest that is not pinned
changes nothing and is not an error.`,
		Example: `  rootswap unpin sha256:3f4e…`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, d, err := g.storeDigest(cmd, args[0])
			if err != nil {
				return err
			}
			was, err := gc.Unpin(cmd.Context(), s, d)
			if err != nil {
				return err
			}
			if was {
				fmt.Fprintf(cmd.OutOrStdout(), "unpinned %s\n", d)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s was not pinned\n", d)
			}
			return nil
		},
	}
}

// days is a duration flag that also takes whole days: "30d", "1d12h", as
// well as anything time.ParseDuration takes.
type days time.Duration

func (d *days) String() string { return time.Duration(*d).String() }
func (d *days) Type() string   { return "duration" }

func (d *days) Set(v string) error {
	var total time.Duration
	rest := v
	if n, after, ok := strings.Cut(v, "d"); ok {
		k, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("%q: want a duration such as 30d, 1d12h or 720h", v)
		}
		total, rest = time.Duration(k)*24*time.Hour, after
	}
	if rest != "" {
		x, err := time.ParseDuration(rest)
		if err != nil {
			return fmt.Errorf("%q: want a duration such as 30d, 1d12h or 720h", v)
		}
		if x < 0 && total > 0 {
			return fmt.Errorf("%q: want a duration such as 30d, 1d12h or 720h", v)
		}
		total += x
	}
	*d = days(total)
	return nil
}
