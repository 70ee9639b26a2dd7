package unit

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/rootswap/rootswap/activate"
)

// Spec is one machine's service: what `rootswap unit NAME IMAGE` offers.
// The nspawn choices are activate's, which also checks them.
type Spec struct {
	Name, Image  string
	Daemon       bool     // Image comes from the Docker daemon: order the unit after docker.service
	Command      []string // run in the tree; empty: the image's ENTRYPOINT and CMD, read at each start
	Nspawn       activate.NspawnOptions
	RestartSec   time.Duration // RestartSec= between restarts
	HealthyAfter time.Duration // > 0: ROOTSWAP_HEALTHY_AFTER for crash-loop detection
	StopTimeout  time.Duration // how long a stopping payload has after SIGTERM; 0: DefaultStopTimeout
	NoInit       bool          // no rootswap init in front of the payload (run --no-init)
	Entrypoint   *string       // run --entrypoint: replaces the image's ENTRYPOINT and drops its CMD
	// PrepareFlags are global flags prepare gets before its command
	// ("--registry-timeout=30s"): those that change what it does.
	PrepareFlags []string
}

// DefaultStopTimeout is how long a stopping payload has after SIGTERM
// unless the Spec says otherwise: Docker's and Podman's 10 s, not
// systemd's 90 s. With rootswap's init as PID 1 a payload without a
// handler dies of the SIGTERM at once; the timeout bounds only one that
// handles it and takes too long, and every restart waits for it.
const DefaultStopTimeout = 10 * time.Second

func (sp *Spec) stopTimeout() time.Duration {
	if sp.StopTimeout > 0 {
		return sp.StopTimeout
	}
	return DefaultStopTimeout
}

// stopMargin is how much longer systemd waits for a stop than run gives
// the payload: the time nspawn takes to terminate the container.
const stopMargin = 15 * time.Second

func (sp *Spec) check() error {
	if err := activate.ValidName(sp.Name); err != nil {
		return err
	}
	// The same refusals as `rootswap run`, now rather than at the first start.
	if err := sp.Nspawn.Check(sp.Name, sp.Command); err != nil {
		return invalidf("unit: %w", err)
	}
	return nil
}

// sourceDeps order the unit after what its image source needs: the
// Docker daemon, or for a registry, archive or layout the network.
// Wants, never Requires: a unit must start from cache when its source is
// down, and a registry image needs no Docker at all.
func (sp *Spec) sourceDeps() []*unit.UnitOption {
	dep := "network-online.target"
	if sp.Daemon {
		dep = "docker.service"
	}
	return []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Wants", dep),
		unit.NewUnitOption("Unit", "After", dep),
	}
}

// ServiceFiles are rootswap-NAME.service for the binary bin and store
// root, both absolute: prepare before every start, run under nspawn,
// report after every stop, restart always. An error wrapping ErrInvalid
// or activate.ErrInvalidName is a spec no unit can be written for.
func ServiceFiles(bin, root string, sp Spec) ([]File, error) {
	if err := sp.check(); err != nil {
		return nil, err
	}
	c, err := serviceCommands(bin, root, sp)
	if err != nil {
		return nil, err
	}
	return []File{{"rootswap-" + sp.Name + ".service", serviceOptions(sp, c)}}, nil
}

// execs are the service's command lines, quoted for the unit file.
type execs struct{ prepare, run, report string }

// serviceCommands quotes the prepare, run and report command lines of the
// checked spec sp for binary bin and store root. An error wraps ErrInvalid:
// an executable path systemd would not take.
func serviceCommands(bin, root string, sp Spec) (execs, error) {
	prepare, err := execLine(sp.prepareArgs(bin, root, "--pull", sp.Name, sp.Image)...)
	if err != nil {
		return execs{}, err
	}
	runArgs := []string{bin, "--root", root, "run"}
	if sp.NoInit {
		runArgs = append(runArgs, "--no-init")
	}
	if sp.Entrypoint != nil {
		runArgs = append(runArgs, "--entrypoint", *sp.Entrypoint)
	}
	runArgs = append(append(runArgs, sp.Name, "--keep-unit"), sp.Nspawn.Args()...)
	if len(sp.Command) > 0 {
		// "--": a command word that looks like an option (-x, --) stays
		// the command.
		runArgs = append(append(runArgs, "--"), sp.Command...)
	}
	run, err := execLine(runArgs...)
	if err != nil {
		return execs{}, err
	}
	report, err := execLine(bin, "--root", root, "report", sp.Name)
	if err != nil {
		return execs{}, err
	}
	return execs{prepare, run, report}, nil
}

// prepareArgs is the prepare command line of bin on store root with the
// spec's global flags and args.
func (sp *Spec) prepareArgs(bin, root string, args ...string) []string {
	line := append([]string{bin, "--root", root}, sp.PrepareFlags...)
	return append(append(line, "prepare"), args...)
}

// serviceOptions are the [Unit], [Service] and [Install] options of the
// service for sp that runs the command lines c.
func serviceOptions(sp Spec, c execs) []*unit.UnitOption {
	opts := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", fmt.Sprintf("rootswap machine %s (%s)", sp.Name, sp.Image)),
	}
	opts = append(opts, sp.sourceDeps()...)
	typ := "simple"
	if sp.Nspawn.NotifyReady {
		typ = "notify"
	}
	opts = append(opts, unit.NewUnitOption("Service", "Type", typ))
	if sp.Nspawn.NotifyReady {
		// nspawn, which relays the payload's READY=1, is run's child, not
		// the main process.
		opts = append(opts, unit.NewUnitOption("Service", "NotifyAccess", "all"))
	}
	if sp.HealthyAfter > 0 {
		opts = append(opts, unit.NewUnitOption("Service", "Environment", "ROOTSWAP_HEALTHY_AFTER="+sp.HealthyAfter.String()))
	}
	return append(opts,
		unit.NewUnitOption("Service", "ExecStartPre", c.prepare),
		unit.NewUnitOption("Service", "ExecStart", c.run),
		unit.NewUnitOption("Service", "ExecStopPost", c.report),
		unit.NewUnitOption("Service", "Restart", "always"),
		unit.NewUnitOption("Service", "RestartSec", sp.RestartSec.String()),
		// A cold import of a large image can take minutes.
		unit.NewUnitOption("Service", "TimeoutStartSec", "15min"),
		// A stop is SIGTERM to run alone, which records it and passes it
		// on: nspawn gives the payload SIGTERM, and after --stop-timeout
		// run has nspawn terminate the container (which unregisters the
		// machine); systemd's SIGKILL to the cgroup comes 15s later.
		unit.NewUnitOption("Service", "Environment", activate.StopTimeoutEnv+"="+sp.stopTimeout().String()),
		unit.NewUnitOption("Service", "TimeoutStopSec", (sp.stopTimeout()+stopMargin).String()),
		unit.NewUnitOption("Service", "KillMode", "mixed"),
		unit.NewUnitOption("Service", "Delegate", "yes"),
		unit.NewUnitOption("Install", "WantedBy", "multi-user.target"),
	)
}

// NspawnFiles are the alternative for systemd-nspawn@.service users: a
// drop-in that prepares the image and records the start before every
// start, reports after every stop (an operator's by systemd's stop or
// restart job), and replaces the template's ExecStart, whose -U could
// chown the shared tree. The settings nspawn reads follow the image, as
// the service's `rootswap run` does, with or without a command: the
// drop-in's `rootswap nspawn-settings`, given the spec's choices and
// command, writes NAME.nspawn at each start, after prepare, from the
// current image's config (activate.FileSettings, WriteSettings); no file
// is written now. Errors are as ServiceFiles'.
func NspawnFiles(bin, root string, sp Spec) ([]File, error) {
	if err := sp.check(); err != nil {
		return nil, err
	}
	name, o := sp.Name, sp.Nspawn
	// The command and the settings go into a .nspawn file at each start:
	// refuse now what it cannot hold, not at the first start.
	if _, err := settingsOptions(o.Settings(), sp.Command); err != nil {
		return nil, err
	}
	prepare, err := execLine(sp.prepareArgs(bin, root, "--pull", "--link-machines", name, sp.Image)...)
	if err != nil {
		return nil, err
	}
	// After prepare, which may roll back: the settings of the tree that
	// starts.
	settings, err := execLine(sp.settingsArgs(bin, root)...)
	if err != nil {
		return nil, err
	}
	pre := []string{prepare, settings}
	// nspawn is the main process, not `rootswap run`: report records the
	// start after prepare, and after the stop asks systemd whether it was
	// an operator's (a stop or restart job of the unit).
	started, err := execLine(bin, "--root", root, "report", "--start", name)
	if err != nil {
		return nil, err
	}
	report, err := execLine(bin, "--root", root, "report", "--unit", "systemd-nspawn@"+name+".service", name)
	if err != nil {
		return nil, err
	}
	// The machine by name rather than %i: a valid name is the instance
	// string as it is, and execLine would double the "%".
	start, err := execLine(append([]string{"systemd-nspawn", "--quiet", "--keep-unit", "--link-journal=try-guest",
		"--settings=override", "--machine=" + name}, o.Extra...)...)
	if err != nil {
		return nil, err
	}
	dropin := sp.sourceDeps()
	for _, p := range append(pre, started) {
		dropin = append(dropin, unit.NewUnitOption("Service", "ExecStartPre", p))
	}
	dropin = append(dropin,
		unit.NewUnitOption("Service", "ExecStart", ""),
		unit.NewUnitOption("Service", "ExecStart", start),
		unit.NewUnitOption("Service", "ExecStopPost", report),
		unit.NewUnitOption("Service", "Restart", "always"),
		unit.NewUnitOption("Service", "RestartSec", sp.RestartSec.String()),
		unit.NewUnitOption("Service", "TimeoutStartSec", "15min"),
		unit.NewUnitOption("Service", "TimeoutStopSec", sp.stopTimeout().String()),
	)
	if sp.HealthyAfter > 0 {
		dropin = append(dropin, unit.NewUnitOption("Service", "Environment", "ROOTSWAP_HEALTHY_AFTER="+sp.HealthyAfter.String()))
	}
	return []File{{"systemd-nspawn@" + name + ".service.d/rootswap.conf", dropin}}, nil
}

// settingsArgs is the `rootswap nspawn-settings` command line of bin on
// store root that writes the spec's settings at each start: the spec's
// machine choices as the flags of `unit` that gave them, and its command
// after "--" (so a word that looks like an option stays the command).
func (sp *Spec) settingsArgs(bin, root string) []string {
	a := []string{bin, "--root", root, "nspawn-settings"}
	o := sp.Nspawn
	for _, f := range []struct {
		flag string
		vals []string
	}{{"bind", o.Binds}, {"bind-ro", o.BindsRO}, {"setenv", o.Env}, {"nspawn-opt", o.Extra}} {
		for _, v := range f.vals {
			a = append(a, "--"+f.flag+"="+v)
		}
	}
	for _, f := range []struct {
		flag string
		on   bool
	}{{"read-only", o.ReadOnly}, {"private-users", o.PrivateUsers}, {"notify", o.NotifyReady}, {"no-init", sp.NoInit}} {
		if f.on {
			a = append(a, "--"+f.flag)
		}
	}
	if sp.Entrypoint != nil {
		a = append(a, "--entrypoint="+*sp.Entrypoint)
	}
	a = append(a, sp.Name)
	if len(sp.Command) > 0 {
		a = append(append(a, "--"), sp.Command...)
	}
	return a
}

// settingsOptions are a .nspawn file's lines for the settings st and the
// command line command (Parameters=; none if empty): Boot=no unless st
// sets Boot=, then those. An error wraps ErrInvalid: a word the file
// cannot hold.
func settingsOptions(st []activate.NspawnSetting, command []string) ([]*unit.UnitOption, error) {
	var opts []*unit.UnitOption
	if !slices.ContainsFunc(st, func(s activate.NspawnSetting) bool { return s.Section == "Exec" && s.Key == "Boot" }) {
		opts = append(opts, unit.NewUnitOption("Exec", "Boot", "no"))
	}
	if len(command) > 0 {
		line, err := settingsWords(command)
		if err != nil {
			return nil, err
		}
		opts = append(opts, unit.NewUnitOption("Exec", "Parameters", line))
	}
	for _, s := range st {
		v := s.Value
		if s.Word {
			var err error
			if v, err = settingsWords([]string{v}); err != nil {
				return nil, err
			}
		}
		opts = append(opts, unit.NewUnitOption(s.Section, s.Key, v))
	}
	return opts, nil
}

// SettingsDir is where `rootswap nspawn-settings` writes by default:
// nspawn trusts /run/systemd/nspawn, as /etc/systemd/nspawn, and reads
// the first NAME.nspawn it finds in /etc/systemd/nspawn, then there,
// then beside the image (systemd.nspawn(5)).
const SettingsDir = "/run/systemd/nspawn"

// shadowDir is the one directory nspawn reads before SettingsDir.
const shadowDir = "/etc/systemd/nspawn"

// WriteSettings writes machine name's .nspawn file for the settings st
// and the command line command (Parameters=) to dir, replacing the one
// there atomically (a temporary file renamed into place, so a starting
// nspawn never reads half of it), and returns its path. In SettingsDir
// it first refuses a NAME.nspawn in /etc/systemd/nspawn, which nspawn
// would read instead (left by a unit written with a command by rootswap before nspawn-settings took commands). An error
// wrapping ErrInvalid is a word the file cannot hold.
func WriteSettings(dir, name string, st []activate.NspawnSetting, command []string) (string, error) {
	shadow := ""
	if filepath.Clean(dir) == SettingsDir {
		shadow = shadowDir
	}
	return writeSettings(dir, shadow, name, st, command)
}

// writeSettings is WriteSettings, refusing a NAME.nspawn in shadow
// unless it is "".
func writeSettings(dir, shadow, name string, st []activate.NspawnSetting, command []string) (string, error) {
	if shadow != "" {
		if _, err := os.Lstat(filepath.Join(shadow, name+".nspawn")); err == nil {
			return "", fmt.Errorf("nspawn settings %s: %s/%s.nspawn exists and nspawn would read it instead of %s/%s.nspawn: remove it (an older rootswap unit --nspawn-file with a COMMAND wrote it)", name, shadow, name, dir, name)
		}
	}
	opts, err := settingsOptions(st, command)
	if err != nil {
		return "", err
	}
	f := File{name + ".nspawn", opts}
	b, err := serialize(f)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, f.name)
	return path, writeFile(path, b)
}

// settingsWords quotes a list of words for a .nspawn file's Parameters=
// and Environment= (systemd.nspawn(5)). Those are split by the config
// parser's extract_first_word(EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE):
// single and double quotes group, a backslash is an ordinary character
// (so "\"" inside double quotes ends the quote, and nspawn ignores the
// whole line as invalid), and nothing expands: no specifiers, no
// variables, no C escapes. Each word is written as single-quoted runs,
// with its single quotes in double quotes ('it'"'"'s'). A newline cannot
// be written at all: it would end the line.
func settingsWords(words []string) (string, error) {
	out := make([]string, len(words))
	for i, w := range words {
		if strings.ContainsAny(w, "\n\r\x00") {
			return "", invalidf("unit --nspawn-file: %q: a .nspawn file cannot hold a newline (the service unit, without --nspawn-file, can)", w)
		}
		if w != "" && !strings.ContainsAny(w, " \t\"'\\") {
			out[i] = w
			continue
		}
		var b strings.Builder
		for len(w) > 0 || b.Len() == 0 {
			n := strings.IndexByte(w, '\'')
			switch {
			case n < 0:
				n = len(w)
				fallthrough
			case n > 0:
				b.WriteString("'" + w[:n] + "'")
			default:
				n = len(w) - len(strings.TrimLeft(w, "'"))
				b.WriteString(`"` + w[:n] + `"`)
			}
			w = w[n:]
		}
		out[i] = b.String()
	}
	return strings.Join(out, " "), nil
}
