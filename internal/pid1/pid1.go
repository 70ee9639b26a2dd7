// Package pid1 is the init rootswap puts in front of a payload, the way
// `docker run --init` puts tini there: rootswap's own (static) binary,
// bind-mounted read-only into the container and run by systemd-nspawn as
// the container's PID 1, with the payload as its only child.
//
// Why a payload needs one: the kernel delivers to a PID 1 only the
// signals it has a handler for, so a payload that never installed one
// for SIGTERM (a shell script, most programs) ignores the stop and is
// killed only when the stop timeout runs out; and a PID 1 that never
// waits for its orphans fills the process table with zombies. The init
// has a handler for every signal a stop or an operator sends, passes each
// on to the payload (the payload, no longer PID 1, gets the default
// action it was written for), reaps every process that ends in the
// container, and exits with the payload's status as soon as the payload
// ends (the kernel then kills what is left in the container).
//
// The package leans on nothing but the standard library: it runs inside
// any image, a FROM scratch one included, as the user the payload runs as.
package pid1

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// Command is the hidden subcommand of rootswap that runs Run: the
// container's command line is BINARY Command -- PAYLOAD [ARGS…].
const Command = "container-init"

// Path is where rootswap bind-mounts its binary in the container: under
// /run, which nspawn always mounts as a tmpfs, so it needs no mount point
// in the image and works on a read-only root too.
const Path = "/run/rootswap-init"

// NotifyPath is where the init listens for the payload's sd_notify
// messages (READY=1, STATUS=…) in the container, beside Path on nspawn's
// /run tmpfs (see relayNotify).
const NotifyPath = "/run/rootswap-init.notify"

// notifyPath is NotifyPath; tests, whose init is no container's, move it.
var notifyPath = NotifyPath

// forwarded are the signals the init passes on to the payload: the stops
// (SIGTERM, SIGINT, SIGQUIT and whatever STOPSIGNAL an image names), the
// ones operators send by hand, and every real-time signal. Left out:
// SIGCHLD (the init's own), SIGKILL and SIGSTOP (no handler can exist),
// the job-control stops SIGTSTP, SIGTTIN and SIGTTOU (they would stop the
// init), the faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS,
// SIGABRT: the init's own), SIGPIPE, and SIGURG, which the Go runtime
// sends itself for preemption. Real-time signals go on only to a payload
// that handles them (see catches).
var forwarded = func() []os.Signal {
	s := []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGTERM, syscall.SIGALRM, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGIO,
		syscall.SIGPWR, syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGVTALRM, syscall.SIGPROF, syscall.SIGSTKFLT}
	for n := 34; n <= 64; n++ { // SIGRTMIN..SIGRTMAX as the kernel numbers them
		s = append(s, syscall.Signal(n))
	}
	return s
}()

// sigRTMin is the first real-time signal as the kernel numbers it (the C
// library reserves 32 and 33 for itself).
const sigRTMin = syscall.Signal(34)

// catches reports whether process pid has a handler for sig (the SigCgt
// mask of /proc/PID/status). Real-time signals are systemd's requests to
// a container's PID 1 (machinectl poweroff sends SIGRTMIN+4): the init
// passes one on only to a payload that handles it, as the kernel would
// deliver it to the payload as PID 1, so a request the payload never
// asked for does not kill it by the signal's default action.
func catches(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// Exit statuses of the init itself, as shells and `docker run` use them.
const (
	exitCannotRun = 126 // the payload exists but cannot be executed
	exitNotFound  = 127 // no such payload
	exitUsage     = 2   // the init's own command line is wrong
)

// Creds are the user a payload runs as, as rootswap resolved the image's
// USER against the image's own /etc/passwd and /etc/group.
type Creds struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups; none is none (setgroups(0))
}

// String is the --user option's value: UID:GID[:G1,G2…].
func (c Creds) String() string {
	s := fmt.Sprintf("%d:%d", c.UID, c.GID)
	for i, g := range c.Groups {
		sep := ","
		if i == 0 {
			sep = ":"
		}
		s += sep + strconv.FormatUint(uint64(g), 10)
	}
	return s
}

// ParseCreds reads Creds.String's form.
func ParseCreds(s string) (Creds, error) {
	f := strings.Split(s, ":")
	if len(f) < 2 || len(f) > 3 {
		return Creds{}, fmt.Errorf("user %q: want UID:GID[:GROUPS]", s)
	}
	num := func(v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("user %q: %q is not an ID", s, v)
		}
		return uint32(n), nil
	}
	var c Creds
	var err error
	if c.UID, err = num(f[0]); err != nil {
		return c, err
	}
	if c.GID, err = num(f[1]); err != nil {
		return c, err
	}
	if len(f) == 3 && f[2] != "" {
		for _, g := range strings.Split(f[2], ",") {
			n, err := num(g)
			if err != nil {
				return c, err
			}
			c.Groups = append(c.Groups, n)
		}
	}
	return c, nil
}

// Options are the init's own, before the "--" that starts the payload.
type Options struct {
	Creds *Creds // run the payload as this user; nil: as the init runs
	Exec  bool   // exec the payload instead of starting it: it becomes PID 1 (no init)
}

// parseArgs splits the init's command line into its options and the
// payload: [--user UID:GID[:GROUPS]] [--exec] -- PAYLOAD [ARGS…]. A
// command line without "--" is the payload alone.
func parseArgs(args []string) (Options, []string, error) {
	var o Options
	if !slices.Contains(args, "--") {
		return o, args, nil
	}
	for len(args) > 0 {
		a := args[0]
		args = args[1:]
		switch a {
		case "--":
			return o, args, nil
		case "--exec":
			o.Exec = true
		case "--user":
			if len(args) == 0 {
				return o, nil, errors.New("--user: no value")
			}
			c, err := ParseCreds(args[0])
			if err != nil {
				return o, nil, err
			}
			o.Creds, args = &c, args[1:]
		default:
			return o, nil, fmt.Errorf("unknown option %q", a)
		}
	}
	return o, args, nil
}

// Args are the init's command line for options o and payload argv.
func (o Options) Args(argv []string) []string {
	var a []string
	if o.Creds != nil {
		a = append(a, "--user", o.Creds.String())
	}
	if o.Exec {
		a = append(a, "--exec")
	}
	return append(append(a, "--"), argv...)
}

// Run runs the payload its command line args name (see parseArgs;
// argv[0] looked up in $PATH when it has no slash, as execvp does) as the
// init's child and returns the status the init exits with: the
// payload's, or 128+n when signal n killed it; 127 when the payload does
// not exist, 126 when it cannot be executed. Messages go to stderr.
// Outside a container (not PID 1) the init makes itself the child
// subreaper, so orphans still come to it. With --exec it becomes the
// payload instead (as that user), and returns only if that fails.
func Run(args []string, stderr io.Writer) int {
	o, argv, err := parseArgs(args)
	if err != nil {
		fmt.Fprintln(stderr, "rootswap-init:", err)
		return exitUsage
	}
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "rootswap-init: no command to run")
		return exitUsage
	}
	if o.Exec {
		return execPayload(argv, o.Creds, stderr)
	}
	// Before the fork: a signal that arrives between the two is queued,
	// not lost.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	defer signal.Stop(sigs)
	// Job-control stops must not stop the init when it is in the
	// terminal's foreground group or writes to it.
	signal.Ignore(syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	if os.Getpid() != 1 {
		// PR_SET_CHILD_SUBREAPER: orphans come to this process, as to a PID 1.
		syscall.RawSyscall(syscall.SYS_PRCTL, 36, 1, 0)
	}
	// Before the fork: a message the payload sends at once is queued.
	env, stopRelay := relayNotify(os.Environ(), stderr)
	defer stopRelay()
	child, code := start(argv, env, o.Creds, stderr)
	if child == 0 {
		return code
	}
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			// The payload's group leader alone, as tini does by default:
			// processes the payload started are its business.
			if n := sig.(syscall.Signal); n < sigRTMin || catches(child, n) {
				syscall.Kill(child, n)
			}
			continue
		}
		if status, done := reap(child); done {
			return status
		}
	}
	return 0 // not reached: sigs is never closed
}

// start forks and execs argv as the payload (as creds, if not nil, with
// the environment env) in a process group of its own, which becomes the
// terminal's foreground group when the init's stdin is its controlling
// terminal (so Ctrl-C reaches the payload once, not the init too). It
// returns the payload's PID, or 0 and the status the init exits with.
func start(argv, env []string, creds *Creds, stderr io.Writer) (int, int) {
	path, code := lookPath(argv[0], stderr)
	if code != 0 {
		return 0, code
	}
	attr := &syscall.SysProcAttr{Setpgid: true, Credential: credential(creds)}
	if foregroundTTY(0) {
		attr.Foreground, attr.Ctty = true, 0
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys:   attr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "rootswap-init: exec %s: %v\n", path, err)
		return 0, execStatus(err)
	}
	return pid, 0
}

// execPayload becomes the payload: the user (creds, if not nil) and then
// the program. It returns only on failure, with the status to exit with.
func execPayload(argv []string, creds *Creds, stderr io.Writer) int {
	path, code := lookPath(argv[0], stderr)
	if code != 0 {
		return code
	}
	if creds != nil {
		// Every thread: syscall's Setgroups/Setgid/Setuid change them all.
		groups := make([]int, len(creds.Groups))
		for i, g := range creds.Groups {
			groups[i] = int(g)
		}
		if err := syscall.Setgroups(groups); err != nil {
			fmt.Fprintf(stderr, "rootswap-init: user %s: setgroups: %v\n", creds, err)
			return exitCannotRun
		}
		if err := syscall.Setgid(int(creds.GID)); err != nil {
			fmt.Fprintf(stderr, "rootswap-init: user %s: setgid: %v\n", creds, err)
			return exitCannotRun
		}
		if err := syscall.Setuid(int(creds.UID)); err != nil {
			fmt.Fprintf(stderr, "rootswap-init: user %s: setuid: %v\n", creds, err)
			return exitCannotRun
		}
	}
	err := syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(stderr, "rootswap-init: exec %s: %v\n", path, err)
	return execStatus(err)
}

// credential is creds as ForkExec takes them.
func credential(creds *Creds) *syscall.Credential {
	if creds == nil {
		return nil
	}
	// An empty, non-nil list: setgroups(0), no supplementary groups,
	// as Docker gives a user the image's /etc/group does not list.
	return &syscall.Credential{Uid: creds.UID, Gid: creds.GID, Groups: append([]uint32{}, creds.Groups...)}
}

// lookPath finds the payload's program as execvp would, or says why not
// and returns the status to exit with.
func lookPath(name string, stderr io.Writer) (string, int) {
	path, err := exec.LookPath(name)
	if err != nil && !errors.Is(err, exec.ErrDot) {
		code := exitNotFound
		if errors.Is(err, fs.ErrPermission) {
			code = exitCannotRun
		}
		fmt.Fprintf(stderr, "rootswap-init: %s: %v\n", name, unwrapExec(err))
		return "", code
	}
	return path, 0
}

// execStatus is the status for a failed exec: 127 for a program that is
// not there, 126 for one that cannot run.
func execStatus(err error) int {
	if errors.Is(err, fs.ErrNotExist) {
		return exitNotFound
	}
	return exitCannotRun
}

// unwrapExec drops exec.Error's own "exec: NAME:" prefix, which the
// caller's message already names.
func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// foregroundTTY reports whether fd is the process's controlling terminal
// (TIOCGPGRP answers only for that).
func foregroundTTY(fd int) bool {
	var pgrp int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp)))
	return errno == 0
}

// reap waits for every process that has ended, and reports the status of
// the payload child once it is among them.
func reap(child int) (status int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return status, done // ECHILD, or nobody else has ended yet
		}
		if pid == child {
			done = true
			status = ws.ExitStatus()
			if ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
		}
	}
}
