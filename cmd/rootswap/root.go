package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/cache"
)

// globals are the flags every command shares.
type globals struct {
	root        string
	lockTimeout time.Duration
	quiet       bool
	verbose     bool
	log         *slog.Logger
}

func (g *globals) open(ctx context.Context) (*cache.Store, error) {
	return cache.Open(ctx, g.root, cache.Options{LockTimeout: g.lockTimeout})
}

func defaultRoot() string {
	if r := os.Getenv("ROOTSWAP_ROOT"); r != "" {
		return r
	}
	return "/var/lib/rootswap"
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "rootswap",
		Short: "Run Docker images under systemd-nspawn from a deduplicated store",
		Long: `rootswap imports Docker images into a content-addressed store of rootfs trees,
points machines at them with an atomic symlink flip, and runs them under
systemd-nspawn. A restart of an unchanged image costs milliseconds; a new
version shares every unchanged file with the old one; rollback is one flip.`,
		Example: `  rootswap prepare --pull web registry.example/web:stable
  rootswap run web --bind=/srv/web /usr/bin/web-server
  rootswap rollback web`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelInfo
			switch {
			case g.quiet:
				level = slog.LevelError
			case g.verbose:
				level = slog.LevelDebug
			}
			g.log = newLogger(level)
		},
	}
	root.PersistentFlags().StringVar(&g.root, "root", defaultRoot(), "store directory (env ROOTSWAP_ROOT)")
	root.PersistentFlags().DurationVar(&g.lockTimeout, "lock-timeout", cache.DefaultLockTimeout, "how long to wait for a busy store")
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "print errors only")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "print debug messages")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	// One line per command; each lives in its own file or in commands.go.
	root.AddCommand(
		importCmd(g),
		activateCmd(g),
		prepareCmd(g),
		rollbackCmd(g),
		historyCmd(g),
		runCmd(g),
		listCmd(g),
		imagesCmd(g),
		gcCmd(g),
		pinCmd(g),
		unpinCmd(g),
		unitCmd(g),
		verifyCmd(g),
		reportCmd(g),
	)
	return root
}
