package activate

import (
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/pid1"
)

// The payload part of nspawn's command line: what runs in the container
// and as whom. run.go's option scan says where the user's command starts;
// this file decides what goes in front of it (rootswap's init) and which
// options the run adds for it.

// RunOptions are rootswap's own choices for one run, given before NAME on
// run's command line (everything after NAME is nspawn's). The zero value
// is the default.
type RunOptions struct {
	NoInit        bool   // no init: the payload itself is the container's PID 1
	Entrypoint    string // with EntrypointSet: replaces the image's ENTRYPOINT ("" clears it) and drops its CMD
	EntrypointSet bool
}

// ownInits are the base names of inits an image brings itself (tini,
// dumb-init, catatonit, s6-overlay's /init, a booted systemd): a command
// starting with one already has a PID 1 that forwards signals and reaps,
// so rootswap adds none in front of it.
var ownInits = map[string]bool{
	"tini": true, "tini-static": true, "dumb-init": true, "catatonit": true, "docker-init": true,
	"init": true, "s6-svscan": true, "runit": true, "runsvdir": true, "systemd": true, "rootswap-init": true,
}

// withInit reports whether the payload command runs under rootswap's
// init, and if not, why not (for the debug log).
func withInit(opt RunOptions, o nspawnOpts, command []string) (bool, string) {
	switch {
	case opt.NoInit:
		return false, "--no-init"
	case o.boot:
		return false, "-b boots the tree's own init"
	case o.asPid2:
		return false, "--as-pid2 makes nspawn's stub init PID 1"
	case len(command) == 0:
		return false, "no command: nspawn's shell"
	case ownInits[path.Base(command[0])]:
		return false, command[0] + " is an init"
	}
	return true, ""
}

// splitCommand splits nspawn's argument list args, which ends with the
// user's arguments user as scanOptions read them into o, into the options
// and the command (without the "--" before it, if any).
func splitCommand(args, user []string, o nspawnOpts) (opts, command []string) {
	at := len(args) - len(user) + o.cmdAt
	opts, command = args[:at:at], args[at:]
	if len(command) > 0 && command[0] == "--" {
		command = command[1:]
	}
	return opts, command
}

// joinCommand is opts and command as nspawn's argument list; the "--"
// keeps a command that starts with "-" the command.
func joinCommand(opts, command []string) []string {
	if len(command) == 0 {
		return opts
	}
	return append(append(opts, "--"), command...)
}

// initArgs puts rootswap's init, the binary exe, in front of command: it
// is bind-mounted read-only at pid1.Path, as `docker run --init` mounts
// tini, and runs command as its child (or, with io.Exec, execs it after
// switching to io.Creds).
func initArgs(opts, command []string, exe string, io pid1.Options) ([]string, []string) {
	opts = append(opts, "--bind-ro="+exe+":"+pid1.Path)
	return opts, append([]string{pid1.Path, pid1.Command}, io.Args(command)...)
}

// initBinary is the binary that runs as the payload's init: this one. It
// should be static, since it runs in images with another C library or
// none; a build with cgo (go build's default where a C compiler is
// installed; `make build` sets CGO_ENABLED=0) runs only in images whose C
// library it can load, which the warning says.
func initBinary() (exe, warning string, err error) {
	if exe, err = os.Executable(); err != nil {
		return "", "", fmt.Errorf("the init: own binary: %w", err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		return "", "", fmt.Errorf("the init %s: %w", exe, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return exe, fmt.Sprintf("the init %s is dynamically linked and runs only in images with its C library: build rootswap with CGO_ENABLED=0 (make build does), or run with --no-init", exe), nil
		}
	}
	return exe, "", nil
}

// payloadArgs completes nspawn's argument list args (nspawnArgs's for the
// user's arguments user, scanned into o) with the payload as the image's
// config made it (ir): its options, then rootswap's init in front of the
// command unless withInit says otherwise. Without the init, the binary
// still switches to the image's user, if it is not plain root, and execs
// the command (nspawn's --user would need getent in the image). exe
// returns the init's binary, asked only when it is used, and a warning
// about it, returned for the caller to print.
func payloadArgs(args, user []string, o nspawnOpts, opt RunOptions, ir imageRun, exe func() (string, string, error)) (out []string, warning string, err error) {
	opts, _ := splitCommand(args, user, o)
	opts = append(opts, ir.options()...)
	command := ir.command
	io, use := initFor(opt, o, ir)
	if !use {
		return joinCommand(opts, command), "", nil
	}
	bin, warning, err := exe()
	if err != nil {
		return nil, "", err
	}
	opts, command = initArgs(opts, command, bin, io)
	return joinCommand(opts, command), warning, nil
}

// initFor decides rootswap's binary's part in a payload run as ir, with
// the run's options opt and the nspawn options scanned into o: use is
// false when the command runs as it is; else the binary goes in front
// with the options io, as the init (withInit) or, without one, only to
// switch to the image's user and exec the command (io.Exec).
func initFor(opt RunOptions, o nspawnOpts, ir imageRun) (io pid1.Options, use bool) {
	on, _ := withInit(opt, o, ir.command)
	if ir.user != nil {
		// Plain root (no groups but its own) is what nspawn starts the
		// command as: without the init, no binary is needed for it.
		if c := ir.user.creds; on || c.UID != 0 || c.GID != 0 || len(c.Groups) > 1 || (len(c.Groups) == 1 && c.Groups[0] != 0) {
			io.Creds = &c
		}
	}
	io.Exec = !on
	return io, on || io.Creds != nil
}

// runPayload completes the argument list args that nspawnArgs made of
// the user's arguments user (scanned into o) for machine name's tree
// (digest d) with what the image's config says: it reads the config from
// the store at every start, so a unit without a command runs what the
// current image says, whatever it said when the unit was written.
func runPayload(s *cache.Store, name, tree string, d digest.Digest, user, args []string, o nspawnOpts, opt RunOptions) ([]string, string, error) {
	cfg, cfgWarning, err := imageConfig(s, d)
	if err != nil {
		return nil, "", err
	}
	_, command := splitCommand(user, user, o)
	var root fs.FS
	if cfg != nil {
		r, err := os.OpenRoot(tree)
		if err != nil {
			return nil, "", err
		}
		defer r.Close()
		root = r.FS()
	}
	ir, err := planImage(cfg, root, o, command, opt)
	if err != nil {
		return nil, "", err
	}
	if ir.killSignal != "" {
		if args, o, err = nspawnArgsStop(name, tree, user, MachinedAvailable(), ir.killSignal); err != nil {
			return nil, "", err
		}
	}
	args, warning, err := payloadArgs(args, user, o, opt, ir, initBinary)
	if cfgWarning != "" {
		warning = strings.TrimPrefix(warning+"; "+cfgWarning, "; ")
	}
	return args, warning, err
}
