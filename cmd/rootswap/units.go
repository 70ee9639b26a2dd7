package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/unit"
)

// unitCmd is long only by its help text: its work is one unit package call.
func unitCmd(g *globals) *cobra.Command {
	var (
		gcTimer     bool
		updateTimer bool
		onCalendar  string
		autoUpdate  bool
		install     bool
		unitDir     string
		svc         serviceFlags
	)
	cmd := &cobra.Command{
		Use:   "unit (--gc-timer | --update-timer | NAME IMAGE [-- COMMAND ARGS…]) [--install [--unit-dir DIR]]",
		Short: "Print or install systemd units for rootswap",
		Long: `Unit prints systemd units that run rootswap; with --install it writes them to
/etc/systemd/system (or --unit-dir) and prints the commands that enable them.

NAME IMAGE gives rootswap-NAME.service: ExecStartPre prepares IMAGE (pulling
it, starting from cache when its source is down, rolling back crash loops),
ExecStart runs COMMAND in the current tree under systemd-nspawn, ExecStopPost
reports how the run ended; Restart=always; Wants=/After=docker.service for an
image from the Docker daemon, network-online.target for a docker://, oci: or
docker-archive: one (see import --help), never Requires=. With --nspawn-file it gives a drop-in for
systemd-nspawn@NAME.service instead, for machinectl users: it runs
'rootswap nspawn-settings' (with the COMMAND, if any) before each start,
which writes NAME.nspawn to /run/systemd/nspawn from the current image's
config, as run would run it (see its --help).

--gc-timer gives rootswap-gc.service, a oneshot running this binary's gc on
this store (--root), and rootswap-gc.timer, which starts it daily at a random
time within the first hour, catching up after downtime.

--auto-update marks machine NAME, in the store, as one that 'rootswap update'
without a NAME updates, following IMAGE (--auto-update=false unmarks it).
--update-timer gives rootswap-update.service, a oneshot running 'rootswap
update' on this store at the lowest CPU and I/O priority (Nice=19,
IOSchedulingClass=idle, CPUWeight=idle), and rootswap-update.timer, which
starts it daily (--on-calendar changes it) within a random hour, catching up
after downtime.`,
		Example: `  rootswap unit web registry.example/web:stable -- /usr/bin/web-server --port 80
  rootswap unit web docker://registry.example/web:stable   # no Docker on the node
  rootswap unit --install --bind /srv/web:/data --notify web web:stable -- /app
  rootswap unit --nspawn-file web web:stable -- /usr/bin/web-server
  rootswap unit --nspawn-file --install web registry.example/web:stable
  rootswap unit --gc-timer
  rootswap --root /srv/rootswap unit --gc-timer --install
  rootswap unit --install --auto-update web docker://registry.example/web:stable
  rootswap unit --update-timer --on-calendar 'Mon..Fri 04:00' --install`,
		Args: func(cmd *cobra.Command, args []string) error {
			timer := gcTimer || updateTimer
			switch {
			case gcTimer && updateTimer:
				return usage("unit: give --gc-timer or --update-timer, not both")
			case timer && len(args) > 0:
				return usage("unit: give --gc-timer, --update-timer or NAME IMAGE, not more than one")
			case timer && cmd.Flags().Changed("auto-update"):
				return usage("unit: --auto-update marks a machine: give NAME IMAGE")
			case cmd.Flags().Changed("on-calendar") && !updateTimer:
				return usage("unit: --on-calendar is for --update-timer")
			case !timer && len(args) < 2,
				!timer && cmd.ArgsLenAtDash() < 0 && len(args) != 2,
				!timer && cmd.ArgsLenAtDash() >= 0 && cmd.ArgsLenAtDash() != 2:
				return usage("unit: give --gc-timer, --update-timer or NAME IMAGE [-- COMMAND ARGS…] (see --help)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("unit: own path: %w", err)
			}
			root, err := filepath.Abs(g.root)
			if err != nil {
				return fmt.Errorf("unit: root %s: %w", g.root, err)
			}
			var files []unit.File
			var sp unit.Spec
			if !gcTimer && !updateTimer {
				if sp, err = svc.spec(cmd, g, args); err != nil {
					return err
				}
			}
			switch {
			case gcTimer:
				files, err = unit.GCTimerFiles(bin, root)
			case updateTimer:
				var pf []string
				if pf, err = g.prepareFlags(cmd); err == nil {
					files, err = unit.UpdateTimerFiles(bin, root, onCalendar, pf)
				}
			case svc.settingsFile:
				files, err = unit.NspawnFiles(bin, root, sp)
			default:
				files, err = unit.ServiceFiles(bin, root, sp)
			}
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("auto-update") {
				// The mark lives in the store, where update reads it;
				// a machine that never ran gets its record here.
				g.mayCreate = true
				s, err := g.open(cmd.Context())
				if err != nil {
					return err
				}
				if err := activate.SetAutoUpdate(s, sp.Name, sp.Image, autoUpdate); err != nil {
					return err
				}
				g.log.Info("machine marked for update", "machine", sp.Name, "image", sp.Image, "auto_update", autoUpdate)
			}
			if !install {
				return unit.Print(cmd.OutOrStdout(), unitDir, files)
			}
			if !gcTimer && !updateTimer {
				if err := g.noticeNoPolicy(sp.Image); err != nil {
					return err
				}
			}
			return unit.Install(cmd.OutOrStdout(), unitDir, files)
		},
	}
	cmd.Flags().BoolVar(&gcTimer, "gc-timer", false, "the daily gc service and timer")
	cmd.Flags().BoolVar(&updateTimer, "update-timer", false, "the update service and timer (updates the machines marked with --auto-update)")
	cmd.Flags().StringVar(&onCalendar, "on-calendar", unit.DefaultUpdateCalendar, "when the update timer fires (`EVENT`, systemd.time(7))")
	cmd.Flags().BoolVar(&autoUpdate, "auto-update", false, "mark machine NAME in the store as one 'rootswap update' without NAME updates")
	cmd.Flags().BoolVar(&install, "install", false, "write the units instead of printing them")
	cmd.Flags().StringVar(&unitDir, "unit-dir", "/etc/systemd/system", "where --install writes units (`DIR`)")
	svc.register(cmd)
	return cmd
}

// serviceFlags are the flags of `rootswap unit NAME IMAGE`; the unit
// package writes the units and activate knows what each nspawn choice is.
type serviceFlags struct {
	machineFlags
	restartSec   time.Duration
	healthyAfter time.Duration
	stopTimeout  time.Duration
	settingsFile bool // a .nspawn file and a drop-in for systemd-nspawn@NAME.service instead
}

// machineFlags are how the machine runs: the nspawn choices and run's
// own, the flags `unit` and `nspawn-settings` share (unit.Spec's
// settingsArgs spells them for the drop-in).
type machineFlags struct {
	nspawn     activate.NspawnOptions
	noInit     bool // no rootswap init in front of the payload
	entrypoint activate.RunOptions
}

func (o *machineFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&o.nspawn.Binds, "bind", nil, "bind mount `SRC[:DST]` into the container (repeatable)")
	f.StringArrayVar(&o.nspawn.BindsRO, "bind-ro", nil, "read-only bind mount `SRC[:DST]` (repeatable)")
	f.StringArrayVarP(&o.nspawn.Env, "setenv", "E", nil, "set `VAR=VALUE` in the container (repeatable)")
	f.BoolVar(&o.nspawn.ReadOnly, "read-only", false, "root read-only with a tmpfs /var (--volatile=state) instead of a writable overlay")
	f.BoolVar(&o.nspawn.PrivateUsers, "private-users", false, "user namespace with --private-users-ownership=map (never -U)")
	f.BoolVar(&o.nspawn.NotifyReady, "notify", false, "Type=notify: the payload reports readiness itself (--notify-ready=yes)")
	f.StringArrayVar(&o.nspawn.Extra, "nspawn-opt", nil, "pass one more `OPTION` to systemd-nspawn (repeatable)")
	f.BoolVar(&o.noInit, "no-init", false, "run the payload as the container's PID 1, without rootswap's init (run --no-init)")
	f.Var(entrypointValue{&o.entrypoint}, "entrypoint", "run `PROGRAM` instead of the image's ENTRYPOINT, without its CMD (run --entrypoint)")
}

func (o *serviceFlags) register(cmd *cobra.Command) {
	o.machineFlags.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&o.restartSec, "restart-sec", 5*time.Second, "RestartSec= between restarts")
	f.DurationVar(&o.healthyAfter, "healthy-after", 0, "ROOTSWAP_HEALTHY_AFTER for crash-loop detection (default 30s)")
	f.DurationVar(&o.stopTimeout, "stop-timeout", unit.DefaultStopTimeout, "how long a stopping payload has after SIGTERM before it is killed (TimeoutStopSec= is 15s more)")
	f.BoolVar(&o.settingsFile, "nspawn-file", false, "print NAME.nspawn and a systemd-nspawn@NAME.service drop-in instead of a service")
}

// nspawnSettingsCmd is what the drop-in of `unit --nspawn-file` runs
// before each start.
func nspawnSettingsCmd(g *globals) *cobra.Command {
	var (
		m   machineFlags
		dir string
	)
	cmd := &cobra.Command{
		Use:   "nspawn-settings [OPTIONS] NAME [-- COMMAND ARGS…]",
		Short: "Write NAME.nspawn from machine NAME's current image, as run would run it",
		Long: `Nspawn-settings writes the systemd.nspawn(5) file of machine NAME's current
tree to ` + unit.SettingsDir + `/NAME.nspawn (or --dir), replacing it atomically: the
image's ENTRYPOINT and CMD (Parameters=, behind rootswap's init), Env
(Environment=), WorkingDir (WorkingDirectory=), User (the init's --user) and
StopSignal (KillSignal=), as 'rootswap run NAME [-- COMMAND…]' would use
them, with the options (the flags of 'rootswap unit') overriding the image
field by field: a COMMAND replaces CMD, as 'docker run IMAGE COMMAND' does,
and --entrypoint replaces ENTRYPOINT.

The drop-in that 'rootswap unit --nspawn-file NAME IMAGE [-- COMMAND…]'
writes runs it before every start, after prepare, so systemd-nspawn@NAME
runs what the current image says, even once the next version changes its
entrypoint. It refuses to write when /etc/systemd/nspawn/NAME.nspawn exists
(an older rootswap wrote one for a unit with a COMMAND): nspawn would read
that one instead.`,
		Example: `  rootswap nspawn-settings --bind /srv/web:/data web
  rootswap nspawn-settings --dir /tmp/settings web && cat /tmp/settings/web.nspawn
  rootswap nspawn-settings web -- --port 8080   # replaces the image's CMD`,
		ValidArgsFunction: g.complete("machine"),
		Args: func(cmd *cobra.Command, args []string) error {
			if at := cmd.ArgsLenAtDash(); len(args) == 0 || (at < 0 && len(args) != 1) || (at >= 0 && at != 1) {
				return usage("nspawn-settings: give NAME [-- COMMAND ARGS…] (see --help)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("nspawn-settings: own path: %w", err)
			}
			s, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			st, command, err := activate.FileSettings(s, args[0], bin, m.nspawn, args[1:], activate.RunOptions{NoInit: m.noInit,
				Entrypoint: m.entrypoint.Entrypoint, EntrypointSet: m.entrypoint.EntrypointSet})
			if err != nil {
				return err
			}
			path, err := unit.WriteSettings(dir, args[0], st, command)
			if err != nil {
				return err
			}
			g.log.Info("wrote nspawn settings", "machine", args[0], "file", path)
			return nil
		},
	}
	m.register(cmd)
	cmd.Flags().StringVar(&dir, "dir", unit.SettingsDir, "where to write NAME.nspawn (`DIR`)")
	return cmd
}

// spec is the service NAME IMAGE [COMMAND…] with these flags and the
// global flags (or variables) given that change what prepare does.
func (o *serviceFlags) spec(cmd *cobra.Command, g *globals, args []string) (unit.Spec, error) {
	image, err := g.image(args[1])
	if err != nil {
		return unit.Spec{}, err
	}
	if image, err = absSource(image); err != nil {
		return unit.Spec{}, err
	}
	pf, err := g.prepareFlags(cmd)
	var ep *string
	if o.entrypoint.EntrypointSet {
		ep = &o.entrypoint.Entrypoint
	}
	return unit.Spec{Name: args[0], Image: image.String(), Daemon: fromDaemon(image), Command: args[2:], Nspawn: o.nspawn,
		RestartSec: o.restartSec, HealthyAfter: o.healthyAfter, StopTimeout: o.stopTimeout, PrepareFlags: pf,
		NoInit: o.noInit, Entrypoint: ep}, err
}

// carried are the global flags a unit's prepare gets when they were given
// (on the command line or by their variables): a unit runs with neither
// the shell's variables nor its flags. A global flag that changes what
// prepare resolves, fetches (a --platform) or admits (a --policy)
// belongs here.
var carried = []string{"source", "registry-timeout", "registries-conf", "policy", "platform"}

// prepareFlags are the carried flags given, as --name=value; a relative
// file is made absolute, as units run in /.
func (g *globals) prepareFlags(cmd *cobra.Command) ([]string, error) {
	var out []string
	for _, name := range carried {
		f := cmd.Flags().Lookup(name)
		if f == nil || !f.Changed {
			continue
		}
		v := f.Value.String()
		if (name == "registries-conf" || name == "policy") && v != "" {
			abs, err := filepath.Abs(v)
			if err != nil {
				return nil, fmt.Errorf("unit: --%s %s: %w", name, v, err)
			}
			v = abs
		}
		out = append(out, "--"+name+"="+v)
	}
	return out, nil
}

// absSource makes the PATH of a local source (oci:, oci-archive:,
// docker-archive:) absolute: a unit's prepare runs in /, not where unit
// was run.
func absSource(ref snapshot.Ref) (snapshot.Ref, error) {
	if ref.Path == "" || filepath.IsAbs(ref.Path) {
		return ref, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return ref, fmt.Errorf("unit: %s: current directory: %w", ref, err)
	}
	ref.Path = wd + "/" + ref.Path // joined, not cleaned: the path as typed, from wd
	return ref, nil
}
