package main

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
)

// errProblems makes verify exit 1 after printing its report.
var errProblems = errors.New("verify found problems")

func verifyCmd(g *globals) *cobra.Command {
	var repair, asJSON bool
	cmd := &cobra.Command{
		Use:   "verify [--repair] [DIGEST…]",
		Short: "Check the store against its index; optionally repair it",
		Long: `Verify checks that the index is internally consistent (bbolt's check), that every
indexed tree (or each DIGEST) exists and matches its manifest, that every
object hashes to its name with its metadata, and that every machine points at
an indexed, complete tree. It lists leftovers nothing references.

--repair removes leftovers and corrupt objects and marks broken trees, so that
the next prepare imports them again. Exit status 1 when problems were found.`,
		Example: `  rootswap verify
  rootswap verify --repair --json`,
		ValidArgsFunction: g.complete("digest…"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var only []digest.Digest
			for _, a := range args {
				d, err := parseDigest(a)
				if err != nil {
					return err
				}
				only = append(only, d)
			}
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			rep, err := s.Verify(cmd.Context(), only, repair)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(w, rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintln(w, "problem:", p)
				}
				for _, l := range rep.Leftovers {
					fmt.Fprintln(w, "leftover:", l)
				}
				for _, r := range rep.Repaired {
					fmt.Fprintln(w, "repaired:", r)
				}
				fmt.Fprintf(w, "%d trees, %d objects checked: %d problems, %d leftovers\n", rep.Trees, rep.Objects, len(rep.Problems), len(rep.Leftovers))
			}
			if len(rep.Problems) > 0 && !repair {
				return errProblems
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "remove leftovers and corrupt objects, mark broken trees for re-import")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
