package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
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
an indexed, complete tree that the index's current generation agrees with. It
lists leftovers nothing references, grouped per kind (-v lists every path).
With a signature policy (see --policy), it also lists as "rejected" each tree
and ref the current policy would no longer admit, re-checked offline from how
the tree was admitted at import; --repair leaves those alone.

--repair removes leftovers and corrupt objects, marks broken trees so that
the next prepare imports them again, and makes the index adopt machine links
ahead of it. A damaged index.db is rebuilt from the disk: trees that match
their manifests, and one "recovered" generation per machine link; history,
refs, pins and leases are reported lost. The damaged file is kept as
index.db.damaged-<time>. Exit status 1 when problems were found.`,
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
			_, readmit, err := g.admit()
			if err != nil {
				return err
			}
			rep, err := s.Verify(cmd.Context(), only, repair)
			if err != nil {
				return err
			}
			rejected, err := policyRejects(s, only, readmit)
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(cmd.OutOrStdout(), struct {
					*cache.VerifyReport
					Rejected []string `json:"rejected,omitempty"`
				}{rep, rejected})
			} else {
				for _, r := range rejected {
					fmt.Fprintln(cmd.OutOrStdout(), "rejected:", r)
				}
				printVerify(cmd.OutOrStdout(), rep, repair, g.verbose)
				if len(rejected) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%d refs of stored trees rejected by the signature policy\n", len(rejected))
				}
			}
			if err != nil {
				return err
			}
			if (len(rep.Problems) > 0 || len(rejected) > 0) && !repair {
				return errProblems
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "remove leftovers and corrupt objects, mark broken trees for re-import")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// policyRejects re-checks each indexed tree (or each of only) under each
// of its refs against the policy (readmit; nil: no policy), offline, and
// lists the ones it rejects: "TREE as REF: reason".
func policyRejects(s *cache.Store, only []digest.Digest, readmit func(snapshot.Image, index.Tree) error) ([]string, error) {
	if readmit == nil {
		return nil, nil
	}
	var trees []index.Tree
	err := s.View(func(tx *index.Tx) (err error) { trees, err = tx.Trees(); return err })
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range trees {
		if len(only) > 0 && !slices.Contains(only, t.Digest) {
			continue
		}
		for _, r := range t.Refs {
			ref, err := recordedImage(r)
			if err != nil {
				out = append(out, fmt.Sprintf("%s as %s: %v", t.Digest, r, err))
				continue
			}
			if err := readmit(snapshot.Image{Ref: ref, Digest: t.Digest, Manifest: t.Manifest}, t); err != nil {
				out = append(out, fmt.Sprintf("%s as %s: %v", t.Digest, r, err))
			}
		}
	}
	return out, nil
}

// printVerify prints verify's report as text: problems, leftovers, what
// a rebuild recovered and lost, what was repaired, then a summary line.
func printVerify(w io.Writer, rep *cache.VerifyReport, repair, verbose bool) {
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "problem:", p)
	}
	printGrouped(w, "leftover:", "", rep.Leftovers, verbose)
	if rb := rep.Rebuilt; rb != nil {
		fmt.Fprintf(w, "rebuilt: index.db from the disk: %d trees, %d machines; the damaged file is kept as %s\n", rb.Trees, rb.Machines, rb.Damaged)
		for _, l := range rb.Lost {
			fmt.Fprintln(w, "lost:", l)
		}
	}
	// Removed leftovers are many: grouped like the leftovers themselves.
	var removed, other []string
	for _, r := range rep.Repaired {
		if p, ok := strings.CutPrefix(r, "removed "); ok && !strings.HasPrefix(p, "corrupt ") {
			removed = append(removed, p)
		} else {
			other = append(other, r)
		}
	}
	for _, r := range other {
		fmt.Fprintln(w, "repaired:", r)
	}
	printGrouped(w, "repaired:", "removed ", removed, verbose)
	fmt.Fprintf(w, "%d trees, %d objects checked: %d problems, %d leftovers", rep.Trees, rep.Objects, len(rep.Problems), len(rep.Leftovers))
	if repair {
		fmt.Fprintf(w, ", %d repaired", len(rep.Repaired))
	}
	fmt.Fprintln(w)
}

// groupShown is how many paths of each kind verify prints without -v.
const groupShown = 3

// printGrouped prints store paths (relative to the store) one line per
// top directory (objects, trees, manifests, tmp) with a count and the first
// few, or with -v all of them one per line: after an interrupted import
// there are thousands, and the summary must not scroll away.
func printGrouped(w io.Writer, label, verb string, paths []string, all bool) {
	if all {
		for _, p := range paths {
			fmt.Fprintln(w, label, verb+p)
		}
		return
	}
	var kinds []string
	byKind := map[string][]string{}
	for _, p := range paths {
		k, _, _ := strings.Cut(p, "/")
		if byKind[k] == nil {
			kinds = append(kinds, k)
		}
		byKind[k] = append(byKind[k], p)
	}
	for _, k := range kinds {
		ps := byKind[k]
		if len(ps) <= groupShown {
			for _, p := range ps {
				fmt.Fprintln(w, label, verb+p)
			}
			continue
		}
		fmt.Fprintf(w, "%s %s%d in %s/: %s and %d more (-v lists them)\n", label, verb, len(ps), k, strings.Join(ps[:groupShown], ", "), len(ps)-groupShown)
	}
}
