package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/journal"
	"github.com/rootswap/rootswap/policy"
	"github.com/rootswap/rootswap/snapshot/registry"
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
	registriesConf  string              // the registries.conf naming mirrors; "" the default
	fromEnv         map[string]string   // flag name → the variable that set it
	area            *statusArea         // stderr's progress lines; nil off a terminal and with -q
	run             activate.RunOptions // run's own flags, before NAME (runflags.go)
	platform        string              // --platform: "" for this host's
	policyFile      string              // the signature policy; "" the default
}

// createsStore names the commands that make a store where none exists: the
// first import or prepare. Every other command says "no store at DIR", so a
// mistyped --root never leaves an empty store behind.
var createsStore = map[string]bool{"import": true, "prepare": true}

// setup checks the global flags and makes the logger. Every command runs it
// once its flags are parsed; run, which parses its own, runs it again.
func (g *globals) setup(cmd *cobra.Command) error {
	// run's flags are parsed by runArgs, so cobra merged no persistent
	// flags into its set: take both.
	for _, fs := range []*pflag.FlagSet{g.flags, cmd.Flags()} {
		if err := g.applyEnv(fs); err != nil {
			return err
		}
	}
	if g.root == "" {
		return usage("--root: empty (give the store directory)") // an empty variable counts as unset
	}
	if g.lockTimeout < 0 {
		return usage("%s: must not be negative (0 fails at once when the store is busy)", g.given("lock-timeout", g.lockTimeout))
	}
	if err := g.checkSource(); err != nil {
		return err
	}
	if g.registryTimeout <= 0 {
		return usage("%s: must be positive", g.given("registry-timeout", g.registryTimeout))
	}
	g.mayCreate = createsStore[cmd.Name()]
	level := slog.LevelInfo
	switch {
	case g.quiet:
		level = slog.LevelError
	case g.verbose:
		level = slog.LevelDebug
	}
	g.log = journal.NewLoggerTo(level, cmd.ErrOrStderr()) // stderr, or what a test set
	if !g.quiet && stderrIsTTY() {
		// The log goes through the area, which clears its lines first.
		g.area = &statusArea{w: os.Stderr, width: terminalWidth}
		g.log = journal.NewLoggerTo(level, g.area)
	}
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

// envAnnotation marks a flag whose default an environment variable
// overrides: applyEnv reads it, and --help says "(env NAME)".
const envAnnotation = "rootswap_env"

// envFlag makes variable env the default of flag name in fs.
func envFlag(fs *pflag.FlagSet, name, env string) {
	if err := fs.SetAnnotation(name, envAnnotation, []string{env}); err != nil {
		panic(err) // a flag registered under another name: a bug here
	}
}

// applyEnv sets every flag of fs that was not given on the command line
// from its variable, if that is set and not empty, and checks the value
// as the flag's own parser does: a malformed one is a usage error naming
// the variable (ROOTSWAP_REGISTRY_TIMEOUT=2 is no duration), never a
// silent fall-back to the default.
func (g *globals) applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		env := f.Annotations[envAnnotation]
		if err != nil || len(env) != 1 || f.Changed {
			return
		}
		v, ok := os.LookupEnv(env[0])
		if !ok || v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = usage("%s=%s: %v (the default of --%s)", env[0], v, unwrapFlagError(serr), f.Name)
			return
		}
		if g.fromEnv == nil {
			g.fromEnv = map[string]string{}
		}
		g.fromEnv[f.Name] = env[0]
	})
	return err
}

// unwrapFlagError drops pflag's `invalid argument "V" for "--name" flag:`
// prefix, which would name the flag rather than the variable.
func unwrapFlagError(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// given names where flag name's value v came from, for a message:
// "--registry-timeout 0s", or "ROOTSWAP_REGISTRY_TIMEOUT=0s".
func (g *globals) given(name string, v any) string {
	s := fmt.Sprint(v)
	if _, ok := v.(string); ok {
		s = strconv.Quote(s)
	}
	if env, ok := g.fromEnv[name]; ok {
		return env + "=" + s
	}
	return "--" + name + " " + s
}

// defaultRoot is the store unless --root or ROOTSWAP_ROOT say otherwise.
const defaultRoot = "/var/lib/rootswap"

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
	pf.StringVar(&g.root, "root", defaultRoot, "store `DIR`ectory; relative to the current directory if not absolute (env ROOTSWAP_ROOT)")
	envFlag(pf, "root", "ROOTSWAP_ROOT")
	pf.DurationVar(&g.lockTimeout, "lock-timeout", cache.DefaultLockTimeout, "how long to wait for a busy store; 0 fails at once (exit status 75)")
	pf.StringVar(&g.source, "source", sourceDaemon, "what a bare IMAGE (no transport prefix such as docker://) names: daemon or registry (env ROOTSWAP_SOURCE)")
	envFlag(pf, "source", "ROOTSWAP_SOURCE")
	pf.DurationVar(&g.registryTimeout, "registry-timeout", registry.DefaultTimeout, "bound on each registry manifest request; past it prepare starts from cache (env ROOTSWAP_REGISTRY_TIMEOUT)")
	envFlag(pf, "registry-timeout", "ROOTSWAP_REGISTRY_TIMEOUT")
	pf.StringVar(&g.registriesConf, "registries-conf", "", "the registries.conf `FILE` naming mirrors and insecure registries (default "+registry.DefaultMirrorsFile+"; env ROOTSWAP_REGISTRIES_CONF)")
	envFlag(pf, "registries-conf", "ROOTSWAP_REGISTRIES_CONF")
	platformFlag(pf, &g.platform)
	pf.StringVar(&g.policyFile, "policy", "", "the signature policy `FILE`, containers-policy.json(5) (default "+policy.DefaultFile+", none if it is missing; env ROOTSWAP_POLICY)")
	envFlag(pf, "policy", "ROOTSWAP_POLICY")
	pf.BoolVarP(&g.quiet, "quiet", "q", false, "print no log messages, only errors (the result on stdout stays)")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "print debug messages")
	g.flags = pf
	root.SetFlagErrorFunc(flagError)
	// An unknown command is a usage error like an unknown flag: with Args
	// set, cobra hands the root's stray words here instead of failing
	// with its own (exit 1) error.
	root.SuggestionsMinimumDistance = 2
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		hint := ""
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
		}
		return usage("unknown command %q (see rootswap --help)%s", args[0], hint)
	}
	root.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
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
		mountCmd(g),
		umountCmd(g),
		gcCmd(g),
		pinCmd(g),
		unpinCmd(g),
		unitCmd(g),
		nspawnSettingsCmd(g),
		verifyCmd(g),
		reportCmd(g),
		updateCmd(g),
		manCmd(),
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
