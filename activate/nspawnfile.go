package activate

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/fsys"
	"github.com/rootswap/rootswap/internal/pid1"
)

// FileSettings are the .nspawn settings of machine name's current tree
// for a `unit --nspawn-file`: what `rootswap run NAME [-- user]` would do
// with the unit's choices o and opt, its command user (none: the
// image's ENTRYPOINT and CMD; else user replaces CMD, as `docker run
// IMAGE COMMAND` does) and the image's config, read now, so that the
// settings written at each start follow the image as run does. The
// user's choices win field by field as on run's command line (o.Extra's
// --setenv, --chdir, --user, --kill-signal included). bin is rootswap's
// binary, bound read-only as the init where run would put it. command is
// Parameters=: the whole command line, init included; empty for nspawn's
// shell (a tree with no config and no user command). Errors name the
// machine; those wrapping nothing are the image's (no ENTRYPOINT or CMD,
// a user its /etc/passwd lacks…).
func FileSettings(s *cache.Store, name, bin string, o NspawnOptions, user []string, opt RunOptions) (st []NspawnSetting, command []string, err error) {
	if err := ValidName(name); err != nil {
		return nil, nil, err
	}
	if err := o.Check(name, user); err != nil {
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
		if tree, err = mergedTree(s, name, tree, d); err != nil {
			return nil, nil, fmt.Errorf("nspawn settings %s: %w", name, err)
		}
		r, err := os.OpenRoot(tree)
		if err != nil {
			return nil, nil, fmt.Errorf("nspawn settings %s: %w", name, err)
		}
		defer r.Close()
		root = r.FS()
	}
	ir, err := planImage(cfg, root, so, user, opt)
	if err != nil {
		return nil, nil, fmt.Errorf("nspawn settings %s: %w", name, err)
	}
	st, command = ir.fileSettings(o, opt, so, bin)
	return st, command, nil
}

// fileSettings are o's settings with what ir, the image's plan for the
// run, adds: its stop signal, environment, working directory and the
// init in front of its command; Boot=yes for -b.
func (ir imageRun) fileSettings(o NspawnOptions, opt RunOptions, so nspawnOpts, bin string) ([]NspawnSetting, []string) {
	stop := "SIGTERM"
	if ir.killSignal != "" {
		stop = ir.killSignal
	}
	st := o.settings(stop)
	if so.boot {
		// Under the drop-in's --settings=override the file's Boot= beats
		// the -b on nspawn's command line.
		st = append(st, NspawnSetting{Section: "Exec", Key: "Boot", Value: "yes"})
	}
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

// mergedTree is where the files of machine name's tree d (at tree) show:
// tree itself for a plain tree; for a stack, whose directory holds only
// its layer links, the mount LinkMachine made of it (prepare
// --link-machines, which a --nspawn-file unit runs before
// nspawn-settings), which nspawn -M runs too.
func mergedTree(s *cache.Store, name, tree string, d digest.Digest) (string, error) {
	st, err := lookupStack(s, d)
	if err != nil || st == nil {
		return tree, err
	}
	mnt := filepath.Join(MachineMounts, name)
	sd, err := filepath.EvalSymlinks(st.dir)
	if err != nil {
		return "", err
	}
	if m, ok, err := fsys.MountAt(mnt); err != nil {
		return "", err
	} else if !ok || m.FSType != "overlay" || m.Source != sd {
		return "", fmt.Errorf("tree %s is stored as layers and is not mounted at %s: run prepare --link-machines %s first (the --nspawn-file unit's ExecStartPre does)", d, mnt, name)
	}
	return mnt, nil
}
