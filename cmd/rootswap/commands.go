package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
)

// exactArgs is cobra.ExactArgs with a usage error naming the command.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usage("%s: takes %d argument(s), got %d (see --help)", cmd.Name(), n, len(args))
		}
		return nil
	}
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", usage("digest %q: %v", s, err)
	}
	return d, nil
}

// minPrefix is the fewest hex digits a digest prefix may have.
const minPrefix = 4

// resolveDigest turns s, a full digest or a unique prefix of one as `list`
// and `images` print them ("sha256:3f4e5a6b7c8d", "3f4e5a"), into the
// digest among candidates it names. A full digest is returned as it is,
// candidate or not, so the command's own "not found" names it.
func resolveDigest(s string, candidates []digest.Digest) (digest.Digest, error) {
	if d, err := digest.Parse(s); err == nil {
		return d, nil
	}
	hex := strings.TrimPrefix(s, string(digest.SHA256)+":")
	if len(hex) < minPrefix || len(hex) >= 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		_, err := digest.Parse(s)
		return "", usage("digest %q: %v (or give at least %d hex digits of one)", s, err, minPrefix)
	}
	var match []digest.Digest
	for _, c := range candidates {
		if c.Algorithm() == digest.SHA256 && strings.HasPrefix(c.Encoded(), hex) && !slices.Contains(match, c) {
			match = append(match, c)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("digest %s: no tree in the store starts with it: %w", s, cache.ErrNotFound)
	case 1:
		return match[0], nil
	}
	names := make([]string, len(match))
	for i, m := range match {
		names[i] = m.String()
	}
	sort.Strings(names)
	return "", usage("digest %s is ambiguous: it starts %s", s, strings.Join(names, ", "))
}

// treeDigests lists the digests of the store's trees, for resolveDigest.
func treeDigests(s *cache.Store) ([]digest.Digest, error) {
	var out []digest.Digest
	err := s.View(func(tx *index.Tx) error {
		ts, err := tx.Trees()
		for _, t := range ts {
			out = append(out, t.Digest)
		}
		return err
	})
	return out, err
}

// storeDigest opens the store and resolves s against its trees.
func (g *globals) storeDigest(cmd *cobra.Command, s string) (*cache.Store, digest.Digest, error) {
	if d, err := digest.Parse(s); err == nil {
		st, err := g.open(cmd.Context())
		return st, d, err
	}
	if _, err := resolveDigest(s, nil); !errors.Is(err, cache.ErrNotFound) {
		return nil, "", err // malformed: a usage error before touching the store
	}
	st, err := g.open(cmd.Context())
	if err != nil {
		return nil, "", err
	}
	ds, err := treeDigests(st)
	if err != nil {
		return nil, "", err
	}
	d, err := resolveDigest(s, ds)
	return st, d, err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func importCmd(g *globals) *cobra.Command {
	var tarFile string
	cmd := &cobra.Command{
		Use:   "import (IMAGE | --tar FILE|-)",
		Short: "Import an image into the store and print its digest",
		Long: `Import resolves IMAGE to its image digest (the config digest, Docker's image
ID), the store key. If the store has that tree it prints the digest and stops.
Otherwise it imports it: from a registry (docker://HOST/REPO:TAG or @sha256:…),
an OCI layout (oci:PATH[:TAG]), a tar of one (oci-archive:PATH[:TAG]) or a
docker save tarball (docker-archive:PATH[:REF]; archives may be gzip- or
zstd-compressed) layer by layer, fetching only the layers the store lacks;
from the Docker daemon (docker-daemon:REF, or a bare tag, name@digest or image
ID unless --source registry) by exporting a created (never started) container
straight into the store and removing it again. Any other WORD:/… or WORD://…
(and containers-storage:) is refused as an unknown transport (exit 2).

With --tar it imports a rootfs tar stream from FILE or stdin (-); the key is
the sha256 of the stream.`,
		Example: `  rootswap import debian:bookworm
  rootswap import docker://registry.example/web:stable
  rootswap import oci:/srv/images/web:stable
  rootswap import oci-archive:/srv/images/web.tar:stable
  rootswap import docker-archive:/srv/images/web.tar.gz
  docker export c1 | rootswap import --tar -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if (tarFile == "") == (len(args) == 0) || len(args) > 1 {
				return usage("import: give exactly one of IMAGE or --tar FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var image snapshot.Ref
			if tarFile == "" {
				var err error
				if image, err = g.image(args[0]); err != nil {
					return err
				}
			}
			s, err := g.open(ctx)
			if err != nil {
				return err
			}
			var d digest.Digest
			if tarFile != "" {
				d, err = importTar(ctx, s, tarFile)
			} else {
				d, err = g.importImage(ctx, s, image)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
	cmd.Flags().StringVar(&tarFile, "tar", "", "import a rootfs tar stream from `FILE` (- for stdin)")
	return cmd
}

// importTar imports the rootfs tar stream in file, or stdin for "-".
func importTar(ctx context.Context, s *cache.Store, file string) (digest.Digest, error) {
	r := io.Reader(os.Stdin)
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		r = f
	}
	t, err := snapshot.ImportTar(ctx, s, r, "")
	if err != nil {
		return "", fmt.Errorf("import %s: %w", file, err)
	}
	return t.Digest, nil
}

// importImage resolves ref through its source and
// imports it.
func (g *globals) importImage(ctx context.Context, s *cache.Store, ref snapshot.Ref) (digest.Digest, error) {
	src, err := g.newSource(s, ref)
	if err != nil {
		return "", err
	}
	defer closeSource(src)
	admit, readmit, err := g.admit()
	if err != nil {
		return "", err
	}
	img, err := src.Resolve(ctx, ref)
	if err != nil {
		return "", err
	}
	opt := snapshot.ImportOptions{Progress: g.importProgress(ref.String()), Log: g.log, Platform: g.platform, Admit: admit, Readmit: readmit}
	if _, _, err := snapshot.ImportImage(ctx, s, img, opt); err != nil {
		return "", err
	}
	return img.Digest, nil
}

func activateCmd(g *globals) *cobra.Command {
	var link linkFlags
	cmd := &cobra.Command{
		Use:   "activate NAME DIGEST",
		Short: "Point machine NAME at an imported tree",
		Long: `Activate flips machines/NAME/current to the tree DIGEST atomically (symlink to a
temporary name, rename over current, fsync) and records a new generation.
Activating the current tree changes nothing.`,
		Example: `  rootswap activate web sha256:3f4e5a6b7c8d…
  rootswap activate web 3f4e5a   # a unique prefix, as list and images print`,
		ValidArgsFunction: g.complete("machine", "digest"),
		Args:              exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := activate.ValidName(args[0]); err != nil {
				return err
			}
			s, d, err := g.storeDigest(cmd, args[1])
			if err != nil {
				return err
			}
			gen, _, err := activate.Activate(cmd.Context(), s, args[0], d, "", "activate")
			if err != nil {
				return err
			}
			if err := link.apply(s, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: generation %d %s\n", args[0], gen.Number, gen.Digest)
			return nil
		},
	}
	link.register(cmd)
	return cmd
}

func prepareCmd(g *globals) *cobra.Command {
	opt := activate.PrepareOptions{HealthyAfter: activate.DefaultHealthyAfter}
	var link linkFlags
	cmd := &cobra.Command{
		Use:   "prepare [--pull] [--force] NAME IMAGE",
		Short: "Import IMAGE if needed and make it machine NAME's current tree",
		Long: `Prepare is what a unit's ExecStartPre runs: resolve IMAGE (see import --help
for the sources), import it if the store lacks it, and activate it for NAME. If
IMAGE is already current it changes nothing and returns in milliseconds; a
registry ref resolved before needs no network then.

With --pull the source is asked first (the daemon pulls; a registry gets one
manifest request, bounded by --registry-timeout); a failed pull is a warning
when a local image remains, else the error. If the source is unreachable
(also mid-download) or no longer has the image (a lost tag, an oci: or
docker-archive: file that is gone), and NAME has a current tree, prepare warns
and exits 0 so the service starts from cache, provided IMAGE resolved on this
store before: a reference that never resolved is an error.

Crash loops: when the current generation failed --max-failures runs in a row
(as recorded by 'rootswap report') without ever staying up --healthy-after,
prepare rolls back to the last healthy generation and marks the bad digest
failed. A failed digest is declined (warning, exit 0) until IMAGE resolves to
another digest or --force is given.`,
		Example: `  rootswap prepare --pull web registry.example/web:stable
  rootswap prepare --pull web docker://registry.example/web:stable`,
		ValidArgsFunction: g.complete("machine", ""),
		Args:              exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := activate.ValidName(args[0]); err != nil {
				return err
			}
			image, err := g.image(args[1])
			if err != nil {
				return err
			}
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			if opt.Admit, opt.Readmit, err = g.admit(); err != nil {
				return err
			}
			src, err := g.newSource(s, image)
			if err != nil {
				return err
			}
			defer closeSource(src)
			opt.Progress = g.importProgress(image.String())
			opt.Platform = g.platform
			o, err := activate.Prepare(cmd.Context(), s, src, g.log, args[0], image, opt)
			if err != nil {
				return err
			}
			if err := link.apply(s, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", args[0], o)
			return nil
		},
	}
	cmd.Flags().BoolVar(&opt.Pull, "pull", false, "pull IMAGE first; carry on with the local image if that fails")
	cmd.Flags().BoolVar(&opt.Force, "force", false, "activate IMAGE even if its digest failed on NAME before")
	cmd.Flags().DurationVar(&opt.HealthyAfter, "healthy-after", opt.HealthyAfter, "a run this long makes a generation healthy (env ROOTSWAP_HEALTHY_AFTER)")
	envFlag(cmd.Flags(), "healthy-after", "ROOTSWAP_HEALTHY_AFTER")
	cmd.Flags().IntVar(&opt.MaxFailures, "max-failures", activate.DefaultMaxFailures, "failed short runs in a row that make a crash loop")
	link.register(cmd)
	return cmd
}

func rollbackCmd(g *globals) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "rollback NAME [--to GEN|DIGEST]",
		Short: "Move machine NAME back to an earlier generation",
		Long: `Rollback flips NAME to the generation before the current one; repeated
rollbacks walk further back. --to jumps to any recorded generation, by number
or digest. No generation is added; a later prepare of a new image appends one.

A rollback holds: the digest it leaves is marked failed ("rolled back by
hand", as history shows), so the restart that applies the rollback (whose
prepare --pull resolves the same IMAGE) and update decline it until IMAGE
names another digest or prepare gets --force. The digest rolled back to is no
longer declined.`,
		Example: `  rootswap rollback web
  rootswap rollback web --to 3
  rootswap rollback web --to sha256:3f4e5a6b7c8d`,
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
			if to != "" && strings.Trim(to, "0123456789") != "" {
				gens, _, err := activate.History(s, args[0])
				if err != nil {
					return err
				}
				var ds []digest.Digest
				for _, gen := range gens {
					ds = append(ds, gen.Digest)
				}
				d, err := resolveDigest(to, ds)
				if err != nil {
					return fmt.Errorf("rollback %s --to: %w", args[0], err)
				}
				to = d.String()
			}
			gen, err := activate.Rollback(cmd.Context(), s, args[0], to)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: generation %d %s\n", args[0], gen.Number, gen.Digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "generation number or digest (or a unique prefix of one) to roll back to")
	return cmd
}

// historyRow is one generation as `history` shows it. Durations in JSON
// are seconds (a number, fractions allowed), as everywhere in --json.
type historyRow struct {
	Number     uint64        `json:"generation"`
	Digest     digest.Digest `json:"digest"`
	Image      string        `json:"image"`
	Activated  time.Time     `json:"activated"`
	Reason     string        `json:"reason"`
	Starts     int           `json:"starts"`
	Failures   int           `json:"failures"`
	LongestRun float64       `json:"longest_run_seconds"`
	LastStart  time.Time     `json:"last_start,omitzero"`
	LastResult string        `json:"last_result,omitempty"`
	Current    bool          `json:"current"`
	Health     string        `json:"health"`
	Declined   string        `json:"declined,omitempty"` // why prepare and update decline its digest
}

func historyCmd(g *globals) *cobra.Command {
	var asJSON bool
	healthyAfter := activate.DefaultHealthyAfter
	cmd := &cobra.Command{
		Use:               "history NAME",
		Short:             "List machine NAME's generations and their health",
		Example:           `  rootswap history web --json`,
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
			gens, m, err := activate.History(s, args[0])
			if err != nil {
				return err
			}
			rows := []historyRow{}
			for _, gen := range gens {
				rows = append(rows, historyRow{gen.Number, gen.Digest, gen.Image, gen.Time, gen.Reason, gen.Starts, gen.Failures,
					gen.LongestRun.Seconds(), gen.LastStart, gen.LastResult, gen.Number == m.Current, activate.HealthOf(m, gen, healthyAfter),
					activate.DeclinedWhy(m, gen.Digest)})
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "\tGEN\tDIGEST\tIMAGE\tACTIVATED\tREASON\tSTARTS\tFAILS\tLONGEST RUN\tHEALTH")
			for _, r := range rows {
				mark := ""
				if r.Current {
					mark = "*"
				}
				health := r.Health
				if r.Declined != "" {
					health += " (" + r.Declined + ")"
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", mark, r.Number, short(r.Digest), r.Image,
					r.Activated.Format(time.RFC3339), r.Reason, r.Starts, r.Failures, (time.Duration(r.LongestRun * float64(time.Second))).Round(time.Second), health)
			}
			return w.Flush()
		},
	}
	cmd.Flags().DurationVar(&healthyAfter, "healthy-after", healthyAfter, "a run this long makes a generation healthy (env ROOTSWAP_HEALTHY_AFTER)")
	envFlag(cmd.Flags(), "healthy-after", "ROOTSWAP_HEALTHY_AFTER")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func short(d digest.Digest) string {
	if len(d.Encoded()) < 12 {
		return d.String()
	}
	return string(d.Algorithm()) + ":" + d.Encoded()[:12]
}

func runCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run [--no-init] NAME [NSPAWN-OPTIONS…] [COMMAND [ARGS…]]",
		Short: "Run machine NAME's current tree under systemd-nspawn",
		Long: `Run starts systemd-nspawn --machine NAME --directory <current tree>
--volatile=overlay, so the container may write anywhere but the shared store is
never modified: nspawn runs in a private mount namespace where the whole store
is mounted read-only, whatever options it gets. --read-only (or a --volatile
mode) replaces the overlay: a read-only root. Everything after NAME goes to
systemd-nspawn unchanged; --private-users without an ownership mode gets
--private-users-ownership=map. Where no systemd runs as PID 1 (no machined),
--register=no --keep-unit are added. ROOTSWAP_NSPAWN overrides the
systemd-nspawn binary.

Run stays nspawn's parent and exits with its status. nspawn gets
--kill-signal=SIGTERM unless given --kill-signal or -b. The first SIGTERM or
SIGINT leaves a stop record for 'rootswap report' (a stop, not a failure) and
is passed on; after $ROOTSWAP_STOP_TIMEOUT, or on a second one, nspawn
terminates the container.

The command runs under rootswap's init (this binary, bind-mounted read-only
at /run/rootswap-init, as docker run --init mounts tini): it is the
container's PID 1, passes every signal on to the command, reaps orphans and
exits with the command's status, so a payload without a SIGTERM handler
still stops at once; it relays the payload's sd_notify messages (READY=1 for
--notify-ready) to nspawn, which takes them from PID 1 only. No init with
--no-init (given before NAME), -b, --as-pid2, no command, or a command that
is an init itself (tini, dumb-init, catatonit, s6's /init, systemd…).`,
		Example: `  rootswap run web --bind=/srv/data:/data /usr/bin/web-server --port 80
  rootswap -q --lock-timeout 5s run -- web /bin/sh
  rootswap run --no-init web /usr/bin/tini -- /app`,
		ValidArgsFunction:  g.completeRun,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flags after NAME are systemd-nspawn's; before it, ours.
			args, help, err := g.runArgs(args)
			if err != nil {
				return err
			}
			if help {
				return cmd.Help()
			}
			if err := g.setup(cmd); err != nil {
				return err
			}
			if len(args) == 0 {
				return usage("run: missing NAME (see --help)")
			}
			if v := os.Getenv(activate.StopTimeoutEnv); v != "" {
				if d, err := time.ParseDuration(v); err != nil || d < 0 {
					return usage("%s=%s: want a duration such as 90s", activate.StopTimeoutEnv, v)
				}
			}
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			return activate.Run(s, args[0], args[1:], g.run, cmd.ErrOrStderr())
		},
	}
	// For --help only: with DisableFlagParsing, runArgs parses them.
	runFlags(cmd.Flags(), &activate.RunOptions{})
	return cmd
}

func listCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List machines",
		Example: `  rootswap list --json`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			ms, err := activate.List(s)
			if err != nil {
				return err
			}
			if asJSON {
				if ms == nil {
					ms = []activate.Status{}
				}
				return printJSON(cmd.OutOrStdout(), ms)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tDIGEST\tGEN\tIMAGE\tACTIVATED")
			for _, m := range ms {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", m.Name, short(m.Digest), m.Generation, m.Image, m.Activated.Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func imagesCmd(g *globals) *cobra.Command {
	var asJSON, layers, digests, trust bool
	cmd := &cobra.Command{
		Use:   "images [--layers] [--digests] [--trust]",
		Short: "List the trees in the store (or its cached layers)",
		Long: `Images lists the trees: refs they were imported as, the number of layers
they were built from (0 for a Docker export or a tar), files, bytes, the bytes
their import stored, machines whose current tree they are, pins. DIGEST is the
image digest (the config's, Docker's image ID); --digests adds the registry
manifest digest each recorded docker:// ref resolved to, the one a
REPO@sha256:… ref names (--json always has them, as "manifests"); --trust adds
how the signature policy admitted each tree when it was imported (the scope,
the requirement and the key's fingerprint; "-" if no policy applied; --json
always has it, as "admitted").

With --layers it lists the layer records instead (diffID, files, bytes, the
trees built from each): what an upgrade from a registry, OCI layout or
docker-archive does not fetch again. gc removes a layer no kept tree lists.`,
		Example: `  rootswap images --json
  rootswap images --digests
  rootswap images --layers`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			if layers {
				return printLayers(cmd.OutOrStdout(), s, asJSON)
			}
			rows, err := activate.Trees(s)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			head := "DIGEST\tREFS\tLAYERS\tFILES\tSIZE\tNEW\tCREATED\tMACHINES\tPINNED"
			if digests {
				head += "\tMANIFEST DIGESTS"
			}
			if trust {
				head += "\tADMITTED"
			}
			fmt.Fprintln(w, head)
			for _, r := range rows {
				pin := ""
				if r.Pinned {
					pin = "yes"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s", short(r.Digest), strings.Join(r.Refs, ","), len(r.Layers), r.Files, humanBytes(r.Bytes), humanBytes(r.NewBytes), r.Created.Format(time.RFC3339), strings.Join(r.Machines, ","), pin)
				if digests {
					var ms []string
					for _, m := range r.Manifests {
						if !slices.Contains(ms, m.Manifest.String()) {
							ms = append(ms, m.Manifest.String())
						}
					}
					fmt.Fprintf(w, "\t%s", strings.Join(ms, ","))
				}
				if trust {
					fmt.Fprintf(w, "\t%s", cmp.Or(r.Admitted, "-"))
				}
				fmt.Fprintln(w)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&layers, "layers", false, "list the cached layers instead of the trees")
	cmd.Flags().BoolVar(&digests, "digests", false, "show the registry manifest digests of each tree's docker:// refs")
	cmd.Flags().BoolVar(&trust, "trust", false, "show how the signature policy admitted each tree")
	return cmd
}

// printLayers is `images --layers`.
func printLayers(out io.Writer, s *cache.Store, asJSON bool) error {
	ls, err := activate.Layers(s)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(out, ls)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DIFFID\tFILES\tSIZE\tNEW\tCREATED\tTREES")
	for _, l := range ls {
		trees := make([]string, len(l.Trees))
		for i, t := range l.Trees {
			trees[i] = short(t)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", short(l.DiffID), l.Files, humanBytes(l.Bytes), humanBytes(l.NewBytes), l.Created.Format(time.RFC3339), strings.Join(trees, ","))
	}
	return w.Flush()
}

// linkFlags are --link-machines and --machines-dir, shared by activate and
// prepare. ROOTSWAP_LINK_MACHINES=1 (or a directory) makes linking the
// default.
type linkFlags struct {
	on  bool
	dir string
}

// linkEnv reads ROOTSWAP_LINK_MACHINES: a boolean (1, true, yes; 0,
// false, no; empty is unset) or an absolute directory, which turns
// linking on there. ok is false for anything else.
func linkEnv(v string) (on bool, dir string, ok bool) {
	switch strings.ToLower(v) {
	case "", "0", "false", "no":
		return false, "", true
	case "1", "true", "yes":
		return true, "", true
	}
	return true, v, strings.HasPrefix(v, "/")
}

func (l *linkFlags) register(cmd *cobra.Command) {
	env := os.Getenv("ROOTSWAP_LINK_MACHINES")
	on, dir, ok := linkEnv(env)
	if dir == "" {
		dir = activate.DefaultMachinesDir
	}
	if !ok {
		// Refused when the command runs, like a malformed flag.
		cmd.PreRunE = func(*cobra.Command, []string) error {
			return usage("ROOTSWAP_LINK_MACHINES=%s: want 1, 0 or an absolute directory", env)
		}
	}
	cmd.Flags().BoolVar(&l.on, "link-machines", on, "keep DIR/NAME pointing at the current tree for machinectl and nspawn -M (env ROOTSWAP_LINK_MACHINES)")
	cmd.Flags().StringVar(&l.dir, "machines-dir", dir, "the `DIR` for --link-machines")
}

func (l *linkFlags) apply(s *cache.Store, name string) error {
	if !l.on {
		return nil
	}
	return activate.LinkMachine(s, name, l.dir)
}
