package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
)

func mountCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mount NAME|DIGEST DIR",
		Short: "Mount an image's tree read-only at DIR on the host, without running it",
		Long: `Mount shows a tree of the store at DIR, read-only, as podman image mount
does, so that diff, find or cp can read it: machine NAME's current tree, or
the tree DIGEST (a digest or a unique prefix of one, as images prints it). A
tree stored as layers is mounted as one overlayfs of them (the merged tree);
a tree imported before layers were stored is bind-mounted. The mount is the
host's until rootswap umount DIR; gc keeps the tree meanwhile. DIR must be
an existing directory outside the store (exit 2 otherwise). Prints DIR.`,
		Example: `  rootswap mount web /mnt/web
  diff -r /mnt/web/etc /etc; rootswap umount /mnt/web
  rootswap mount 3f4e5a /mnt/old`,
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return append(g.machineNames(cmd, toComplete), g.digests(cmd, toComplete)...), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, d, err := g.mountedImage(cmd, args[0])
			if err != nil {
				return err
			}
			dir, err := activate.Mount(cmd.Context(), s, d, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), dir)
			return nil
		},
	}
}

func umountCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "umount DIR",
		Short: "Unmount a tree rootswap mount mounted at DIR",
		Long: `Umount removes the mount rootswap mount made at DIR and prints the digest of
the tree it showed. Anything else mounted at DIR is refused (exit 2).`,
		Example: `  rootswap umount /mnt/web`,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			d, err := activate.Umount(s, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
}

// mountedImage opens the store and finds the tree arg names: machine
// arg's current tree, else a digest or a unique prefix of one.
func (g *globals) mountedImage(cmd *cobra.Command, arg string) (*cache.Store, digest.Digest, error) {
	if activate.ValidName(arg) == nil {
		s, err := g.open(cmd.Context())
		if err != nil {
			return nil, "", err
		}
		d, err := activate.CurrentTree(s, arg)
		if err == nil || !errors.Is(err, cache.ErrNotFound) {
			return s, d, err
		}
		if strings.Trim(arg, "0123456789abcdef") != "" {
			return nil, "", fmt.Errorf("mount %s: no machine of that name (give a machine NAME or a tree DIGEST): %w", arg, cache.ErrNotFound)
		}
	}
	return g.storeDigest(cmd, arg)
}
