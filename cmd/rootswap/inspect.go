package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
)

func inspectCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect IMAGE|DIGEST",
		Short: "Show what the store knows of an image: digests, refs, layers and its config",
		Long: `Inspect shows an image the store holds, as skopeo inspect and podman image
inspect do: its digest (the config digest, the tree key), the references it
was imported as and the manifest digests they resolved through, its layers
(diffID, blobs, files, bytes) and its config: platform, entrypoint, cmd, env,
working directory, user, stop signal, exposed ports, volumes, labels and
healthcheck (see the README for which of them a run uses). It reads the store
only; no source is asked.

IMAGE is a reference the image was imported as (as given to import, prepare
or unit); DIGEST a digest or a unique prefix of one, as images prints it.`,
		Example: `  rootswap inspect docker://registry.example/web:stable
  rootswap inspect 3f4e5a --json`,
		ValidArgsFunction: g.complete("digest"),
		Args:              exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, d, err := g.inspected(cmd, args[0])
			if err != nil {
				return err
			}
			info, err := activate.Inspect(s, d)
			if err != nil {
				return fmt.Errorf("inspect %s: %w", args[0], err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), info)
			}
			return printInspect(cmd.OutOrStdout(), info)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with the config document as recorded)")
	return cmd
}

// inspected opens the store and finds the image arg names: a digest or a
// unique prefix, else a reference a tree was imported as.
func (g *globals) inspected(cmd *cobra.Command, arg string) (*cache.Store, digest.Digest, error) {
	if _, err := resolveDigest(arg, nil); err == nil || errors.Is(err, cache.ErrNotFound) {
		return g.storeDigest(cmd, arg)
	}
	s, err := g.open(cmd.Context())
	if err != nil {
		return nil, "", err
	}
	names := []string{arg}
	if img, err := g.image(arg); err == nil && img.String() != arg {
		names = append(names, img.String())
	}
	rows, err := activate.Trees(s)
	if err != nil {
		return nil, "", err
	}
	for _, r := range rows {
		for _, ref := range r.Refs {
			if slices.Contains(names, ref) {
				return s, r.Digest, nil
			}
		}
	}
	return nil, "", fmt.Errorf("inspect %s: no image in the store was imported as %s (give its digest, or import it first): %w", arg, strings.Join(names, " or "), cache.ErrNotFound)
}

// printInspect is inspect's text form: one field a line.
func printInspect(out io.Writer, info activate.ImageInfo) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	field := func(k string, v any) { fmt.Fprintf(w, "%s:\t%v\n", k, v) }
	list := func(k string, vs []string) {
		if len(vs) == 0 {
			field(k, "")
		}
		for i, v := range vs {
			if i > 0 {
				k = ""
				fmt.Fprintf(w, "\t%s\n", v)
				continue
			}
			field(k, v)
		}
	}
	quoted := func(vs []string) string {
		q := make([]string, len(vs))
		for i, v := range vs {
			q[i] = strconv.Quote(v)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	field("Digest", info.Digest)
	list("Refs", info.Refs)
	ms := make([]string, len(info.Manifests))
	for i, m := range info.Manifests {
		ms[i] = m.String()
	}
	list("Manifests", ms)
	field("Imported", info.Imported.Format("2006-01-02T15:04:05Z07:00"))
	field("Files", info.Files)
	field("Bytes", info.Bytes)
	if c := info.Config; c != nil {
		field("Platform", c.Platform)
		field("Entrypoint", quoted(c.Entrypoint))
		field("Cmd", quoted(c.Cmd))
		list("Env", c.Env)
		field("WorkingDir", c.WorkingDir)
		field("User", c.User)
		field("StopSignal", c.StopSignal)
		list("ExposedPorts", c.ExposedPorts)
		list("Volumes", c.Volumes)
		var labels []string
		for k, v := range c.Labels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		list("Labels", labels)
		if h := c.Healthcheck; h != nil {
			field("Healthcheck", fmt.Sprintf("%s every %s, timeout %s, %d retries", quoted(h.Test), h.Interval, h.Timeout, h.Retries))
		}
		how := "the Docker daemon's description (no document to verify)"
		if info.ConfigVerified {
			how = "the image's own, verified against the digest"
		}
		field("Config", how)
	} else {
		field("Config", "none recorded (a tar import, or imported before rootswap recorded configs: prepare records it)")
	}
	var layers []string
	for _, l := range info.Layers {
		s := fmt.Sprintf("%s  %d files  %d bytes", l.DiffID, l.Files, l.Bytes)
		if !l.Cached {
			s = l.DiffID.String() + "  (no longer cached)"
		}
		layers = append(layers, s)
	}
	list("Layers", layers)
	return w.Flush()
}
