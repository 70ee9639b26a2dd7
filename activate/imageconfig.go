package activate

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// What a run takes from the image's config, as `docker run` does (the
// README's table lists each field): the command is the entrypoint
// followed by the cmd, or by the user's COMMAND instead of the cmd; the
// image's env, working directory and user apply unless the user's nspawn
// options set them; its stop signal is what a stop sends PID 1 unless the
// user gave --kill-signal. Exposed ports and volumes are not used: the
// container shares the host's network, and a volume is a --bind.

// dockerPath is the PATH Docker gives a container whose image sets none.
const dockerPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// imageRun is what the image's config makes of one run.
type imageRun struct {
	command    []string  // what runs; empty: nspawn's shell
	setenv     []string  // VAR=VALUE, as --setenv options
	chdir      string    // --chdir; "" leaves nspawn's (/)
	killSignal string    // --kill-signal; "" leaves the default (SIGTERM)
	user       *execUser // who the payload runs as; nil: as nspawn starts it
}

// planImage maps cfg, the image's config (nil when the store has none:
// a tar import), onto a run whose nspawn options the scan read into o,
// whose command is command (the user's, possibly empty) and whose own
// options are opt. root is the tree, for the image's /etc/passwd and
// /etc/group. The errors name the image field and say what is wrong;
// the caller adds the machine.
func planImage(cfg *ocispec.ImageConfig, root fs.FS, o nspawnOpts, command []string, opt RunOptions) (imageRun, error) {
	if cfg == nil || o.boot {
		// No config to follow, or the tree's own init boots: the user's
		// command (or nspawn's shell) as it is.
		if opt.EntrypointSet {
			command = append(entrypoint(opt.Entrypoint), command...)
		}
		return imageRun{command: command}, nil
	}
	var r imageRun
	// 1. The command: ENTRYPOINT + CMD, COMMAND replacing CMD; --entrypoint
	// replaces ENTRYPOINT and drops CMD, as docker run --entrypoint does.
	ep, cmd := cfg.Entrypoint, cfg.Cmd
	if opt.EntrypointSet {
		ep, cmd = entrypoint(opt.Entrypoint), nil
	}
	if len(command) > 0 {
		cmd = command
	}
	r.command = append(append([]string{}, ep...), cmd...)
	if len(r.command) == 0 {
		return r, fmt.Errorf("the image has no ENTRYPOINT or CMD: give a COMMAND")
	}
	// 2. The user: the image's, resolved as Docker does, unless the user
	// chose one (nspawn's --user, which asks the image's getent).
	env := map[string]bool{}
	for _, kv := range cfg.Env {
		k, _, _ := strings.Cut(kv, "=")
		env[k] = true
	}
	if !o.user {
		u, err := resolveUser(cfg.User, root)
		if err != nil {
			return r, err
		}
		r.user = &u
	}
	// 3. The environment: the image's, each unless the user set it; PATH
	// and HOME as Docker fills them in when the image has none; USER
	// and LOGNAME, which nspawn sets to root, follow the image's user.
	set := func(k, v string) {
		if !o.env[k] {
			r.setenv = append(r.setenv, k+"="+v)
		}
	}
	for _, kv := range cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			set(k, v)
		}
	}
	if !env["PATH"] {
		set("PATH", dockerPath)
	}
	if r.user != nil && !env["HOME"] {
		set("HOME", r.user.home)
	}
	if r.user != nil && r.user.name != "" && r.user.creds.UID != 0 {
		for _, k := range []string{"USER", "LOGNAME"} {
			if !env[k] {
				set(k, r.user.name)
			}
		}
	}
	// 4. The working directory, unless the user gave --chdir.
	if cfg.WorkingDir != "" && !o.chdir {
		if !strings.HasPrefix(cfg.WorkingDir, "/") {
			return r, fmt.Errorf("image WORKDIR %q: not an absolute path", cfg.WorkingDir)
		}
		r.chdir = cfg.WorkingDir
	}
	// 5. The stop signal, unless the user chose how a stop reaches PID 1.
	if cfg.StopSignal != "" && !o.stopBy {
		sig, err := nspawnSignal(cfg.StopSignal)
		if err != nil {
			return r, err
		}
		r.killSignal = sig
	}
	return r, nil
}

// entrypoint is --entrypoint's value as a command: one word, or none for
// "" (docker run --entrypoint "" clears it).
func entrypoint(e string) []string {
	if e == "" {
		return nil
	}
	return []string{e}
}

// options are r's nspawn options, in a fixed order.
func (r imageRun) options() []string {
	var a []string
	for _, kv := range r.setenv {
		a = append(a, "--setenv="+kv)
	}
	if r.chdir != "" {
		a = append(a, "--chdir="+r.chdir)
	}
	return a
}

// signalNames are the standard Linux signals by number, as an image's
// STOPSIGNAL may name them (SIGQUIT, QUIT or 3).
var signalNames = []string{1: "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
	"PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM",
	"PROF", "WINCH", "IO", "PWR", "SYS"}

// nspawnSignal turns an image's STOPSIGNAL into nspawn's --kill-signal
// spelling: SIGNAME, SIGRTMIN+n or SIGRTMAX-n.
func nspawnSignal(s string) (string, error) {
	bad := fmt.Errorf("image STOPSIGNAL %q: not a signal", s)
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if n, err := strconv.Atoi(s); err == nil {
		switch {
		case n > 0 && n < len(signalNames):
			return "SIG" + signalNames[n], nil
		case n >= 34 && n <= 64:
			return fmt.Sprintf("SIGRTMIN+%d", n-34), nil
		}
		return "", bad
	}
	for _, n := range signalNames[1:] {
		if name == n || (name == "IOT" && n == "ABRT") || (name == "POLL" && n == "IO") {
			return "SIG" + n, nil
		}
	}
	for _, rt := range []struct {
		prefix string
		sign   int
	}{{"RTMIN", 1}, {"RTMAX", -1}} {
		rest, ok := strings.CutPrefix(name, rt.prefix)
		if !ok {
			continue
		}
		n := 0
		if rest != "" {
			var err error
			if n, err = strconv.Atoi(rest); err != nil || (rt.sign > 0) != (rest[0] == '+') {
				return "", bad
			}
		}
		if n*rt.sign < 0 || n*rt.sign > 30 {
			return "", bad
		}
		return "SIG" + name, nil
	}
	return "", bad
}
