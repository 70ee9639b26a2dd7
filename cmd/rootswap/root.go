package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/journal"
)

// globals are the flags every command shares.
type globals struct {
	root            string
	lockTimeout     time.Duration
	quiet           bool
	verbose         bool
	log             *slog.Logger
	flags           *pflag.FlagSet      // the persistent flags, for run's own parsing
	mayCreate       bool                // this command may create a missing store
	source          string              // what a bare IMAGE names: sourceDaemon or sourceRegistry
	registryTimeout time.Duration       // bounds a registry's manifest round trips
	run             activate.RunOptions // run's own flags, before NAME (runflags.go)
}

// createsStore names the commands that make a store where none exists: the
// first import or prepare. Every other command says "no store at DIR", so a
// mistyped --root never leaves an empty store behind.
var createsStore = map[string]bool{"import": true, "prepare": true}

// setup checks the global flags and makes the logger. Every command runs it
// once its flags are parsed; run, which parses its own, runs it again.
func (g *globals) setup(cmd *cobra.Command) error {
	if g.root == "" {
		return usage("--root: empty (give the store directory)")
	}
	if g.lockTimeout < 0 {
		return usage("--lock-timeout %s: must not be negative (0 fails at once when the store is busy)", g.lockTimeout)
	}
	if err := g.checkSource(); err != nil {
		return err
	}
	if g.registryTimeout <= 0 {
		return usage("--registry-timeout %s: must be positive", g.registryTimeout)
	}
	g.mayCreate = createsStore[cmd.Name()]
	level := slog.LevelInfo
	switch {
	case g.quiet:
		level = slog.LevelError
	case g.verbose:
		level = slog.LevelDebug
	}
	g.log = journal.NewLogger(level)
	return nil
}

func (g *globals) open(ctx context.Context) (*cache.Store, error) {
	return g.openWith(ctx, cache.Options{})
}

// openWith opens the store with the global flags applied to opt.
func (g *globals) openWith(ctx context.Context, opt cache.Options) (*cache.Store, error) {
	opt.LockTimeout = g.lockTimeout
	if g.lockTimeout == 0 {
		opt.LockTimeout = -1 // fail at once when busy
	}
	opt.MustExist = !g.mayCreate
	return cache.Open(ctx, g.root, opt)
}

func defaultRoot() string {
	if r := os.Getenv("ROOTSWAP_ROOT"); r != "" {
		return r
	}
	return "/var/lib/rootswap"
}

// version is the module version and VCS revision the binary was built
// from, as the Go toolchain recorded them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev != "" {
		v += " (revision " + rev + modified + ")"
	}
	return v + " " + bi.GoVersion
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "rootswap",
		Short: "Run Docker images under systemd-nspawn from a deduplicated store",
		Long: `rootswap imports Docker images into a content-addressed store of rootfs trees,
points machines at them with an atomic symlink flip, and runs them under
systemd-nspawn. A restart of an unchanged image costs milliseconds; a new
version shares every unchanged file with the old one; rollback is one flip.

A command's result goes to stdout; log messages and errors go to stderr
(or the journal). -q silences the log messages, never the result.

Exit status: 0 success, 1 failure, 2 usage error, 75 store busy (retry later).`,
		Example: `  rootswap prepare --pull web registry.example/web:stable
  rootswap run web --bind=/srv/web /usr/bin/web-server
  rootswap rollback web`,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.setup(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.root, "root", defaultRoot(), "store `DIR`ectory; relative to the current directory if not absolute (env ROOTSWAP_ROOT)")
	pf.DurationVar(&g.lockTimeout, "lock-timeout", cache.DefaultLockTimeout, "how long to wait for a busy store; 0 fails at once (exit status 75)")
	pf.StringVar(&g.source, "source", defaultSource(), "what a bare IMAGE (no docker://, oci:, docker-archive:, docker-daemon: prefix) names: daemon or registry (env ROOTSWAP_SOURCE)")
	pf.DurationVar(&g.registryTimeout, "registry-timeout", registryTimeoutDefault(), "bound on each registry manifest request; past it prepare starts from cache (env ROOTSWAP_REGISTRY_TIMEOUT)")
	pf.BoolVarP(&g.quiet, "quiet", "q", false, "print no log messages, only errors (the result on stdout stays)")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "print debug messages")
	g.flags = pf
	root.SetFlagErrorFunc(flagError)
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
		inspectCmd(g),
		gcCmd(g),
		pinCmd(g),
		unpinCmd(g),
		unitCmd(g),
		verifyCmd(g),
		reportCmd(g),
	)
	return root
}

// flagError makes a flag mistake a usage error. For unit, whose container
// command follows NAME IMAGE, an unknown flag is most likely the command's
// own option given without the "--" that must come before it.
func flagError(cmd *cobra.Command, err error) error {
	if cmd.Name() == "unit" && strings.HasPrefix(err.Error(), "unknown ") {
		return usage("unit: %v: the container's command goes after --, as in: rootswap unit NAME IMAGE -- /bin/sh -c 'CMD'", err)
	}
	if !cmd.HasParent() {
		return usageError{err}
	}
	return usageError{fmt.Errorf("%s: %w", cmd.Name(), err)}
}

// runArgs parses the global flags that come before NAME in run's
// arguments, which cobra leaves unparsed because everything after NAME
// belongs to systemd-nspawn. A "--" before NAME ends them. It returns the
// arguments from NAME on.
func (g *globals) runArgs(args []string) (rest []string, help bool, err error) {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.SetOutput(nopWriter{})
	fs.SetInterspersed(false)
	fs.AddFlagSet(g.flags)
	runFlags(fs, &g.run)
	fs.BoolVarP(&help, "help", "h", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, false, usage("run: %v before NAME (systemd-nspawn options go after NAME)", err)
	}
	return fs.Args(), help, nil
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
