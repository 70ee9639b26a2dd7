package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// Shell completion (bash, zsh, fish: `rootswap completion SHELL`) offers
// machine names and digests from the index. It never creates a store.

func (g *globals) completionStore(cmd *cobra.Command) *cache.Store {
	if _, err := os.Stat(filepath.Join(g.root, "index.db")); err != nil {
		return nil
	}
	s, err := g.open(cmd.Context())
	if err != nil {
		return nil
	}
	return s
}

func (g *globals) machineNames(cmd *cobra.Command, prefix string) []string {
	s := g.completionStore(cmd)
	if s == nil {
		return nil
	}
	ms, _ := activate.List(s)
	var out []string
	for _, m := range ms {
		if strings.HasPrefix(m.Name, prefix) {
			out = append(out, m.Name)
		}
	}
	return out
}

func (g *globals) digests(cmd *cobra.Command, prefix string) []string {
	s := g.completionStore(cmd)
	if s == nil {
		return nil
	}
	var out []string
	s.View(func(tx *index.Tx) error {
		ts, err := tx.Trees()
		for _, t := range ts {
			if strings.HasPrefix(t.Digest.String(), prefix) {
				out = append(out, t.Digest.String()+"\t"+strings.Join(t.Refs, ","))
			}
		}
		return err
	})
	return out
}

// complete returns a ValidArgsFunction that offers machine names or
// digests for each position: "machine", "digest" or "" (nothing).
func (g *globals) complete(positions ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) >= len(positions) {
			if len(positions) > 0 && positions[len(positions)-1] == "digest…" {
				return g.digests(cmd, toComplete), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		switch positions[len(args)] {
		case "machine":
			return g.machineNames(cmd, toComplete), cobra.ShellCompDirectiveNoFileComp
		case "digest", "digest…":
			return g.digests(cmd, toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeRun completes run's NAME. Cobra parses no flags for run, so the
// global flags before NAME (--root above all) are parsed here.
func (g *globals) completeRun(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	rest, _, err := g.runArgs(args)
	if err != nil || len(rest) > 0 || strings.HasPrefix(toComplete, "-") {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return g.machineNames(cmd, toComplete), cobra.ShellCompDirectiveNoFileComp
}
