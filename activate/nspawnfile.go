package activate

import (
	"fmt"
	"io/fs"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/pid1"
)

// FileSettings are the .nspawn settings of machine name's current tree
// for a unit that gives no command (`unit --nspawn-file` without --):
// what `rootswap run` would do with the unit's choices o and opt and the
// image's config, read now, so that the settings written at each start
// follow the image as run does. The user's choices win field by field as
// on run's command line (o.Extra's --setenv, --chdir, --user,
// --kill-signal included). bin is rootswap's binary, bound read-only as
// the init where run would put it. command is Parameters=: the whole
// command line, init included; empty for nspawn's shell (a tree with no
// config). Errors name the machine; those wrapping nothing are the
// image's (no ENTRYPOINT or CMD, a user its /etc/passwd lacks…).
func FileSettings(s *cache.Store, name, bin string, o NspawnOptions, opt RunOptions) (st []NspawnSetting, command []string, err error) {
	if err := ValidName(name); err != nil {
		return nil, nil, err
	}
	if err := o.Check(name, nil); err != nil {
		return nil, nil, err
	}
	so := scanOptions(name, o.Args())
	tree, d, err := TreeFor(s, name)
	if err != nil {
		return nil, nil, err
	}
	cfg, _, err := imageConfig(s, d)
	if err != nil {
		return nil, nil, fmt.Errorf("nspawn settings %s: %w", name, err)
	}
	var root fs.FS
	if cfg != nil {
		r, done, err := imageRoot(s, tree, d)
		if err != nil {
			return nil, nil, fmt.Errorf("nspawn settings %s: %w", name, err)
		}
		defer done()
		root = r
	}
	ir, err := planImage(cfg, root, so, nil, opt)
	if err != nil {
		return nil, nil, fmt.Errorf("nspawn settings %s: %w", name, err)
	}
	st, command = ir.fileSettings(o, opt, so, bin)
	return st, command, nil
}

// fileSettings are o's settings with what ir, the image's plan for the
// run, adds: its stop signal, environment, working directory and the
// init in front of its command.
func (ir imageRun) fileSettings(o NspawnOptions, opt RunOptions, so nspawnOpts, bin string) ([]NspawnSetting, []string) {
	stop := "SIGTERM"
	if ir.killSignal != "" {
		stop = ir.killSignal
	}
	st := o.settings(stop)
	for _, kv := range ir.setenv {
		st = append(st, NspawnSetting{"Exec", "Environment", kv, true})
	}
	if ir.chdir != "" {
		st = append(st, NspawnSetting{Section: "Exec", Key: "WorkingDirectory", Value: ir.chdir})
	}
	command := ir.command
	if io, use := initFor(opt, so, ir); use {
		st = append(st, NspawnSetting{Section: "Files", Key: "BindReadOnly", Value: bin + ":" + pid1.Path})
		_, command = initArgs(nil, command, bin, io)
	}
	return st, command
}
