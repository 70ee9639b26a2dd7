package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/spf13/cobra"

	"github.com/rootswap/rootswap/activate"
)

// serviceOptions are the choices `rootswap unit NAME IMAGE` offers: the
// nspawn options users need most, without ever passing -U (its fallback is
// a recursive chown that would rewrite files every tree shares).
type serviceOptions struct {
	binds        []string
	bindsRO      []string
	env          []string
	readOnly     bool
	privateUsers bool
	notify       bool
	nspawnOpts   []string
	restartSec   time.Duration
	stopTimeout  time.Duration
	healthyAfter time.Duration
	settingsFile bool // a .nspawn file and a drop-in for systemd-nspawn@NAME.service instead
}

func (o *serviceOptions) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&o.binds, "bind", nil, "bind mount `SRC[:DST]` into the container (repeatable)")
	f.StringArrayVar(&o.bindsRO, "bind-ro", nil, "read-only bind mount `SRC[:DST]` (repeatable)")
	f.StringArrayVarP(&o.env, "setenv", "E", nil, "set `VAR=VALUE` in the container (repeatable)")
	f.BoolVar(&o.readOnly, "read-only", false, "root read-only with a tmpfs /var (--volatile=state) instead of a writable overlay")
	f.BoolVar(&o.privateUsers, "private-users", false, "user namespace with --private-users-ownership=map (never -U)")
	f.BoolVar(&o.notify, "notify", false, "Type=notify: the payload reports readiness itself (--notify-ready=yes)")
	f.StringArrayVar(&o.nspawnOpts, "nspawn-opt", nil, "pass one more `OPTION` to systemd-nspawn (repeatable)")
	f.DurationVar(&o.restartSec, "restart-sec", 5*time.Second, "RestartSec= between restarts")
	f.DurationVar(&o.stopTimeout, "stop-timeout", 90*time.Second, "how long a stopping payload has after SIGTERM before it is killed (TimeoutStopSec= is 15s more)")
	f.DurationVar(&o.healthyAfter, "healthy-after", 0, "ROOTSWAP_HEALTHY_AFTER for crash-loop detection (default 30s)")
	f.BoolVar(&o.settingsFile, "nspawn-file", false, "print NAME.nspawn and a systemd-nspawn@NAME.service drop-in instead of a service")
}

// nspawnArgs are the options `rootswap run` passes on for these choices.
func (o *serviceOptions) nspawnArgs() []string {
	var a []string
	for _, b := range o.binds {
		a = append(a, "--bind="+b)
	}
	for _, b := range o.bindsRO {
		a = append(a, "--bind-ro="+b)
	}
	for _, e := range o.env {
		a = append(a, "--setenv="+e)
	}
	if o.readOnly {
		// The tree read-only with a tmpfs /var, instead of an overlay on
		// everything.
		a = append(a, "--volatile=state")
	}
	if o.privateUsers {
		a = append(a, "--private-users=pick", "--private-users-ownership=map")
	}
	if o.notify {
		a = append(a, "--notify-ready=yes")
	}
	return append(a, o.nspawnOpts...)
}

func (o *serviceOptions) check(name string, command []string) error {
	if err := activate.ValidName(name); err != nil {
		return err
	}
	for _, e := range o.env {
		if !strings.Contains(e, "=") {
			return usage("unit: --setenv %q: want VAR=VALUE", e)
		}
	}
	// The same refusals as `rootswap run`, now rather than at the first start.
	if _, err := activate.NspawnArgs(name, "/", append(o.nspawnArgs(), command...), false); err != nil {
		return usage("unit: %v", err)
	}
	return nil
}

// stopMargin is how much longer systemd waits for a stop than run gives
// the payload: the time nspawn takes to terminate the container.
const stopMargin = 15 * time.Second

// serviceUnits is rootswap-NAME.service: prepare before every start, run
// under nspawn, report after every stop, restart always.
func serviceUnits(bin, root, name, image string, command []string, o *serviceOptions) ([]unitFile, error) {
	if err := o.check(name, command); err != nil {
		return nil, err
	}
	prepare, err := execLine(bin, "--root", root, "prepare", "--pull", name, image)
	if err != nil {
		return nil, err
	}
	runArgs := append([]string{bin, "--root", root, "run", name, "--keep-unit"}, o.nspawnArgs()...)
	if len(command) > 0 {
		// "--": a command word that looks like an option (-x, --) stays
		// the command.
		runArgs = append(append(runArgs, "--"), command...)
	}
	run, err := execLine(runArgs...)
	if err != nil {
		return nil, err
	}
	report, err := execLine(bin, "--root", root, "report", name)
	if err != nil {
		return nil, err
	}
	opts := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", fmt.Sprintf("rootswap machine %s (%s)", name, image)),
		// Wants, not Requires: the service must start from cache while
		// Docker is down.
		unit.NewUnitOption("Unit", "Wants", "docker.service"),
		unit.NewUnitOption("Unit", "After", "docker.service"),
	}
	typ := "simple"
	if o.notify {
		typ = "notify"
	}
	opts = append(opts, unit.NewUnitOption("Service", "Type", typ))
	if o.notify {
		// nspawn, which relays the payload's READY=1, is run's child, not
		// the main process.
		opts = append(opts, unit.NewUnitOption("Service", "NotifyAccess", "all"))
	}
	if o.healthyAfter > 0 {
		opts = append(opts, unit.NewUnitOption("Service", "Environment", "ROOTSWAP_HEALTHY_AFTER="+o.healthyAfter.String()))
	}
	opts = append(opts,
		unit.NewUnitOption("Service", "ExecStartPre", prepare),
		unit.NewUnitOption("Service", "ExecStart", run),
		unit.NewUnitOption("Service", "ExecStopPost", report),
		unit.NewUnitOption("Service", "Restart", "always"),
		unit.NewUnitOption("Service", "RestartSec", o.restartSec.String()),
		// A cold import of a large image can take minutes.
		unit.NewUnitOption("Service", "TimeoutStartSec", "15min"),
		// A stop is SIGTERM to run alone, which records it and passes it
		// on: nspawn gives the payload SIGTERM, and after --stop-timeout
		// run has nspawn terminate the container (which unregisters the
		// machine); systemd's SIGKILL to the cgroup comes 15s later.
		unit.NewUnitOption("Service", "Environment", activate.StopTimeoutEnv+"="+o.stopTimeout.String()),
		unit.NewUnitOption("Service", "TimeoutStopSec", (o.stopTimeout+stopMargin).String()),
		unit.NewUnitOption("Service", "KillMode", "mixed"),
		unit.NewUnitOption("Service", "Delegate", "yes"),
		unit.NewUnitOption("Install", "WantedBy", "multi-user.target"),
	)
	return []unitFile{{"rootswap-" + name + ".service", opts}}, nil
}

// settingsUnits are the alternative for systemd-nspawn@.service users:
// NAME.nspawn (for /etc/systemd/nspawn) and a drop-in that prepares the
// image before every start, reports after every stop, and replaces the
// template's ExecStart, whose -U could chown the shared tree.
func settingsUnits(bin, root, name, image string, command []string, o *serviceOptions) ([]unitFile, error) {
	if err := o.check(name, command); err != nil {
		return nil, err
	}
	prepare, err := execLine(bin, "--root", root, "prepare", "--pull", "--link-machines", name, image)
	if err != nil {
		return nil, err
	}
	report, err := execLine(bin, "--root", root, "report", name)
	if err != nil {
		return nil, err
	}
	nspawn := []*unit.UnitOption{unit.NewUnitOption("Exec", "Boot", "no")}
	if len(command) > 0 {
		line, err := settingsWords(command)
		if err != nil {
			return nil, err
		}
		nspawn = append(nspawn, unit.NewUnitOption("Exec", "Parameters", line))
	}
	for _, e := range o.env {
		line, err := settingsWords([]string{e})
		if err != nil {
			return nil, err
		}
		nspawn = append(nspawn, unit.NewUnitOption("Exec", "Environment", line))
	}
	if o.privateUsers {
		nspawn = append(nspawn, unit.NewUnitOption("Exec", "PrivateUsers", "pick"))
	}
	if o.notify {
		nspawn = append(nspawn, unit.NewUnitOption("Exec", "NotifyReady", "yes"))
	}
	if !activate.ChoosesStop(o.nspawnOpts) {
		// SIGTERM to the payload on a stop (nspawn's default without -b is
		// SIGKILL), as `rootswap run` does.
		nspawn = append(nspawn, unit.NewUnitOption("Exec", "KillSignal", "SIGTERM"))
	}
	if o.readOnly {
		nspawn = append(nspawn, unit.NewUnitOption("Files", "ReadOnly", "yes"), unit.NewUnitOption("Files", "Volatile", "state"))
	} else {
		nspawn = append(nspawn, unit.NewUnitOption("Files", "Volatile", "overlay"))
	}
	nspawn = append(nspawn, unit.NewUnitOption("Files", "PrivateUsersOwnership", "map"))
	for _, b := range o.binds {
		nspawn = append(nspawn, unit.NewUnitOption("Files", "Bind", b))
	}
	for _, b := range o.bindsRO {
		nspawn = append(nspawn, unit.NewUnitOption("Files", "BindReadOnly", b))
	}
	// The machine by name rather than %i: a valid name is the instance
	// string as it is, and execLine would double the "%".
	start, err := execLine(append([]string{"systemd-nspawn", "--quiet", "--keep-unit", "--link-journal=try-guest",
		"--settings=override", "--machine=" + name}, o.nspawnOpts...)...)
	if err != nil {
		return nil, err
	}
	dropin := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Wants", "docker.service"),
		unit.NewUnitOption("Unit", "After", "docker.service"),
		unit.NewUnitOption("Service", "ExecStartPre", prepare),
		unit.NewUnitOption("Service", "ExecStart", ""),
		unit.NewUnitOption("Service", "ExecStart", start),
		unit.NewUnitOption("Service", "ExecStopPost", report),
		unit.NewUnitOption("Service", "Restart", "always"),
		unit.NewUnitOption("Service", "RestartSec", o.restartSec.String()),
		unit.NewUnitOption("Service", "TimeoutStartSec", "15min"),
		unit.NewUnitOption("Service", "TimeoutStopSec", o.stopTimeout.String()),
	}
	if o.healthyAfter > 0 {
		dropin = append(dropin, unit.NewUnitOption("Service", "Environment", "ROOTSWAP_HEALTHY_AFTER="+o.healthyAfter.String()))
	}
	return []unitFile{
		{"../nspawn/" + name + ".nspawn", nspawn},
		{"systemd-nspawn@" + name + ".service.d/rootswap.conf", dropin},
	}, nil
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
			return "", usage("unit --nspawn-file: %q: a .nspawn file cannot hold a newline (the service unit, without --nspawn-file, can)", w)
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
