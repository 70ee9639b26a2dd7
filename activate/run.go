package activate

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/util"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

// The store is kept immutable by the kernel, not by this file's option
// check: Run hands systemd-nspawn a store that is mounted read-only in a
// mount namespace of its own (fsys.ReadOnlyView), so whatever options
// reach nspawn, the worst a container can get is a read-only root or an
// nspawn error. The check below exists for clear, early errors only.

// SkipOptionCheckEnv, set to 1, makes NspawnArgs pass every option on
// without the early check, and Run skip its bind source and mount point
// checks. It is for tests that prove the read-only mount
// alone keeps the store safe; users gain nothing from it but obscure
// nspawn errors.
const SkipOptionCheckEnv = "ROOTSWAP_UNSAFE_SKIP_OPTION_CHECK"

// nspawnValued lists the systemd-nspawn (252) options that take a
// required value, which may be the next argument, so the scan can tell
// options from the command. --volatile and --private-users take an
// optional value: only "--volatile=MODE" gives one, "--volatile no" is
// --volatile=yes and the command "no", as nspawn's getopt reads it.
var nspawnValued = map[string]bool{
	"-D": true, "--directory": true, "--template": true, "-i": true, "--image": true, "--oci-bundle": true,
	"-u": true, "--user": true, "-M": true, "--machine": true, "-E": true, "--setenv": true,
	"-p": true, "--port": true, "-S": true, "--slice": true, "-Z": true, "--selinux-context": true,
	"-L": true, "--selinux-apifs-context": true, "--bind": true, "--bind-ro": true, "--tmpfs": true,
	"--overlay": true, "--overlay-ro": true, "--network-interface": true, "--network-macvlan": true,
	"--network-ipvlan": true, "--network-veth-extra": true, "--network-bridge": true,
	"--network-zone": true, "--network-namespace-path": true, "--chdir": true, "--pivot-root": true,
	"--property": true, "--kill-signal": true, "--link-journal": true, "--capability": true,
	"--drop-capability": true, "--ambient-capability": true, "--system-call-filter": true, "--rlimit": true,
	"--oom-score-adjust": true, "--cpu-affinity": true, "--personality": true, "--resolv-conf": true,
	"--timezone": true, "--console": true, "--uuid": true, "--hostname": true, "--load-credential": true,
	"--set-credential": true, "--inaccessible": true, "--notify-ready": true, "--suppress-sync": true,
	"--no-new-privileges": true, "--root-hash": true, "--root-hash-sig": true, "--verity-data": true,
	"--bind-user": true, "--settings": true, "--private-users-ownership": true, "--register": true,
}

// nspawnOpts is what the scan learns from the user's options.
type nspawnOpts struct {
	volatile  string          // "" if not given, else the mode: "no", "yes", "state", "overlay" or the value as given
	readOnly  bool            // --read-only
	userns    bool            // --private-users other than no
	ownership string          // --private-users-ownership, lowercased ("" if not given)
	stopBy    bool            // --kill-signal or -b/--boot: the user chose how a stop reaches PID 1
	boot      bool            // -b/--boot: nspawn runs the tree's own init
	asPid2    bool            // -a/--as-pid2: nspawn's stub init is PID 1
	cmdAt     int             // user[cmdAt:] is the command, after a "--" if user[cmdAt] is one
	env       map[string]bool // the variables -E/--setenv set
	chdir     bool            // --chdir: the user chose the working directory
	user      bool            // -u/--user: the user chose who runs the payload
	targets   []mountTarget
	refusal   error // the first option the early check refuses
}

// mountTarget is a path in the container that an option mounts on, and
// the host paths it mounts there.
type mountTarget struct {
	opt, path string
	sources   []string
}

// parseBool is systemd's parse_boolean; ok is false for anything else.
func parseBool(v string) (val, ok bool) {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on":
		return true, true
	case "0", "no", "n", "false", "f", "off":
		return false, true
	}
	return false, false
}

// volatileMode is nspawn's reading of --volatile=v.
func volatileMode(v string) string {
	if b, ok := parseBool(v); ok {
		if b {
			return "yes"
		}
		return "no"
	}
	return strings.ToLower(v)
}

// scanOptions reads the nspawn options at the start of user, up to the
// command, the way nspawn's getopt does. It never fails: the first option
// the early check refuses is kept in the result's refusal, naming the
// machine name.
func scanOptions(name string, user []string) nspawnOpts {
	o := nspawnOpts{cmdAt: len(user)}
	refuse := func(format string, a ...any) {
		if o.refusal == nil {
			o.refusal = fmt.Errorf("run %s: option "+format, append([]any{name}, a...)...)
		}
	}
	for i := 0; i < len(user); i++ {
		a := user[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			o.cmdAt = i
			break // the command starts here
		}
		opt, val, hasVal, ok := o.splitOption(a, refuse)
		if !ok {
			continue
		}
		if !hasVal && nspawnValued[opt] && i+1 < len(user) {
			val = user[i+1]
			i++
		}
		o.option(opt, val, hasVal, a, refuse)
	}
	return o
}

// splitOption reads argument a as one option and its value, if a carries
// one ("--opt=val", or "-EX=1" where -E takes the rest). The short options
// without a value in a cluster ("-qU") go to short as it reads them; ok is
// false when the cluster holds nothing else, and there is no option left
// for the caller.
func (o *nspawnOpts) splitOption(a string, refuse func(string, ...any)) (opt, val string, hasVal, ok bool) {
	opt, val, hasVal = strings.Cut(a, "=")
	if strings.HasPrefix(a, "--") || len(a) <= 2 {
		return opt, val, hasVal, true
	}
	for j := 1; j < len(a); j++ {
		c := "-" + a[j:j+1]
		if nspawnValued[c] {
			val = a[j+1:]
			return c, val, val != "", true
		}
		o.short(c, refuse, a)
	}
	return "", "", false, false
}

// option records what option opt with value val (hasVal: given in the
// same argument) tells the check, and refuses the options that would
// change which tree runs, write it or chown it. a is the argument as the
// user wrote it, for the refusal.
func (o *nspawnOpts) option(opt, val string, hasVal bool, a string, refuse func(string, ...any)) {
	switch opt {
	case "-D", "--directory", "-i", "--image", "-M", "--machine", "--template", "--oci-bundle":
		refuse("%s: rootswap sets the machine and its tree itself", opt)
	case "-x", "--ephemeral":
		refuse("%s: would copy the tree inside the store; the default overlay already discards writes", opt)
	case "--volatile":
		if !hasVal {
			val = "yes"
		}
		o.volatile = volatileMode(val)
		if o.volatile == "no" {
			refuse("%s: the container would write the shared store (the store is mounted read-only, so nspawn would fail)", a)
		}
	case "--read-only":
		o.readOnly = true
	case "-E", "--setenv":
		if o.env == nil {
			o.env = map[string]bool{}
		}
		k, _, _ := strings.Cut(val, "=")
		o.env[k] = true
	case "--chdir":
		o.chdir = true
	case "-u", "--user":
		o.user = true
	case "--kill-signal":
		o.stopBy = true
	case "-b", "--boot":
		o.stopBy, o.boot = true, true
	case "-a", "--as-pid2":
		o.asPid2 = true
	case "--private-users":
		b, isBool := parseBool(val)
		o.userns = !hasVal || !isBool || b
	case "--private-users-ownership":
		o.ownership = strings.ToLower(val)
		if o.ownership == "chown" || o.ownership == "auto" {
			refuse("%s: would chown the shared tree; use --private-users-ownership=map", a)
		}
	case "--private-users-chown":
		refuse("%s: would chown the shared tree; use --private-users-ownership=map", a)
	case "-U":
		o.short(opt, refuse, a)
	case "--bind", "--bind-ro":
		// SRC[:DST[:OPTIONS]]; DST defaults to SRC.
		parts := strings.SplitN(val, ":", 3)
		dst := parts[0]
		if len(parts) > 1 {
			dst = parts[1]
		}
		o.target(opt, val, dst, parts[0])
	case "--tmpfs":
		dst, _, _ := strings.Cut(val, ":")
		o.target(opt, val, dst)
	case "--overlay", "--overlay-ro":
		parts := strings.Split(val, ":")
		o.target(opt, val, parts[len(parts)-1], parts[:len(parts)-1]...)
	}
}

// short handles the short options without a value that the check cares
// about, alone or in a cluster.
func (o *nspawnOpts) short(c string, refuse func(string, ...any), a string) {
	switch c {
	case "-b":
		o.stopBy, o.boot = true, true
	case "-a":
		o.asPid2 = true
	case "-U":
		refuse("%s: -U would chown the shared tree; use --private-users=pick --private-users-ownership=map", a)
	case "-x":
		refuse("%s: -x would copy the tree inside the store; the default overlay already discards writes", a)
	}
}

// target records a mount point, unless its path is escaped or relative,
// which the check cannot read the way nspawn does.
func (o *nspawnOpts) target(opt, val, p string, sources ...string) {
	if strings.HasPrefix(p, "/") && !strings.Contains(val, `\`) {
		o.targets = append(o.targets, mountTarget{opt + "=" + val, path.Clean(p), sources})
	}
}

// checkSources refuses to bind the store, a path in it or one above it
// into the container. The store stays read-only regardless, but below
// the running tree such a bind shows the container nspawn's own mounts
// as they were before nspawn made them read-only: /proc/sys and the
// cgroup hierarchies, writable, which is the host's kernel.
func checkSources(name, store string, o nspawnOpts) error {
	real, err := filepath.EvalSymlinks(store)
	if err != nil {
		real = store
	}
	for _, t := range o.targets {
		for _, src := range t.sources {
			if !strings.HasPrefix(src, "/") {
				continue // "+PATH" is in the container; relative paths are nspawn's to refuse
			}
			p := filepath.Clean(src)
			if r, err := filepath.EvalSymlinks(p); err == nil {
				p = r
			}
			if within(p, real) || within(real, p) {
				return fmt.Errorf("run %s: option %s: would bind the store (%s) into the container, and beneath the running tree its own /proc/sys and cgroups read-write", name, t.opt, store)
			}
		}
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// NspawnArgs builds the systemd-nspawn argument list for running tree under
// machine name with the user's arguments (options, then the command).
// The root is the tree under --volatile=overlay unless the user chose a
// volatile mode or --read-only; with --private-users and no ownership
// mode, --private-users-ownership=map is added so nspawn never chowns or
// copies the tree. Options that would change which tree runs, write or
// chown it are refused early (unless $ROOTSWAP_UNSAFE_SKIP_OPTION_CHECK=1):
// a clear error, not the safety mechanism (see Run).
// registered says whether nspawn may register with machined.
func NspawnArgs(name, tree string, user []string, registered bool) ([]string, error) {
	args, _, err := nspawnArgs(name, tree, user, registered)
	return args, err
}

func nspawnArgs(name, tree string, user []string, registered bool) ([]string, nspawnOpts, error) {
	return nspawnArgsStop(name, tree, user, registered, "SIGTERM")
}

// nspawnArgsStop is nspawnArgs with stop as the signal a stop sends PID 1
// unless the user chose one (the image's STOPSIGNAL, or SIGTERM).
func nspawnArgsStop(name, tree string, user []string, registered bool, stop string) ([]string, nspawnOpts, error) {
	o := scanOptions(name, user)
	if o.refusal == nil && o.readOnly && o.volatile == "overlay" {
		o.refusal = fmt.Errorf("run %s: option --read-only with --volatile=overlay: the overlay makes the root writable; drop one", name)
	}
	if o.refusal != nil && os.Getenv(SkipOptionCheckEnv) != "1" {
		return nil, o, o.refusal
	}
	args := []string{"--machine", name, "--directory", tree}
	if o.volatile == "" && !o.readOnly {
		args = append(args, "--volatile=overlay")
	}
	if o.userns && o.ownership == "" {
		args = append(args, "--private-users-ownership=map")
	}
	if !registered {
		args = append(args, "--register=no", "--keep-unit")
	}
	if !o.stopBy {
		// nspawn's own default without -b is to answer SIGTERM with
		// SIGKILL to the container: no graceful stop. SIGTERM to PID 1 is
		// the contract images are written for (docker stop); -b's
		// SIGRTMIN+3 is right for a booted init, so the user's choice stays.
		args = append(args, "--kill-signal="+stop)
	}
	return append(args, user...), o, nil
}

// ChoosesStop reports whether the nspawn options user say what a stop
// sends the container's PID 1 (--kill-signal, or -b with nspawn's
// SIGRTMIN+3); otherwise rootswap adds --kill-signal=SIGTERM.
func ChoosesStop(user []string) bool { return scanOptions("", user).stopBy }

// ChoosesBoot reports whether the nspawn options user boot the tree's
// own init (-b), which needs no command.
func ChoosesBoot(user []string) bool { return scanOptions("", user).boot }

// readOnlyRoot names the option that leaves the container's root the
// read-only tree, or "" when nspawn mounts something writable on / (the
// overlay, or the tmpfs of --volatile=yes) and so can make mount points.
func (o nspawnOpts) readOnlyRoot() string {
	switch {
	case o.volatile == "state":
		return "--volatile=state"
	case o.volatile == "no" && o.readOnly:
		return "--read-only"
	case o.volatile == "no":
		return "--volatile=no"
	case o.volatile == "" && o.readOnly:
		return "--read-only"
	}
	return ""
}

// apiMounts are the mount points nspawn needs in every tree; it makes
// them itself on a writable root only.
var apiMounts = []string{"/dev", "/proc", "/run", "/sys", "/tmp"}

// checkMountPoints says in one line which mount points a read-only root
// lacks, before nspawn fails on the first one with an obscure message.
func checkMountPoints(name, tree string, o nspawnOpts, shim []string) error {
	mode := o.readOnlyRoot()
	if mode == "" {
		return nil
	}
	root, err := os.OpenRoot(tree)
	if err != nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	defer root.Close()
	var missing []string
	seen := map[string]bool{}
	lack := func(p, why string) {
		if seen[p] {
			return
		}
		seen[p] = true
		// Only a clear "does not exist" counts: a symlink out of the
		// tree or an unreadable entry is left for nspawn to judge.
		if _, err := root.Stat("." + p); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, p+why)
		}
	}
	for _, p := range apiMounts {
		if !shimmed(shim, p) {
			lack(p, "")
		}
	}
	if o.volatile == "state" {
		lack("/var", " (for --volatile=state)")
	}
	for _, t := range o.targets {
		lack(t.path, " (for "+t.opt+")")
	}
	if len(missing) > 0 {
		return fmt.Errorf("run %s: the image has no %s to mount on, and %s keeps the root read-only: add them to the image or drop %s",
			name, strings.Join(missing, ", "), mode, mode)
	}
	return nil
}

// MachinedAvailable reports whether machined can take a registration: systemd is
// PID 1 and the system bus is there. Elsewhere (build machines, plain
// containers) nspawn must be told --register=no --keep-unit.
func MachinedAvailable() bool {
	if !util.IsRunningSystemd() {
		return false
	}
	_, err := os.Stat("/run/dbus/system_bus_socket")
	return err == nil
}

// Nspawn is the systemd-nspawn binary: $ROOTSWAP_NSPAWN or found in $PATH.
// The error names the path and where it came from.
func Nspawn() (string, error) {
	if p := os.Getenv("ROOTSWAP_NSPAWN"); p != "" {
		fi, err := os.Stat(p)
		if err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
			err = errors.New("not an executable file")
		}
		if err != nil {
			return "", fmt.Errorf("systemd-nspawn %s (from ROOTSWAP_NSPAWN): %w", p, err)
		}
		return p, nil
	}
	p, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return "", fmt.Errorf("systemd-nspawn not found in $PATH (install systemd-container, or set ROOTSWAP_NSPAWN): %w", err)
	}
	return p, nil
}

// StopTimeoutEnv names the duration Run gives a stopping payload before
// it has nspawn terminate the container (a second SIGTERM): the payload's
// grace, which a unit's TimeoutStopSec= exceeds. nspawn terminating the
// container itself matters: when systemd's SIGKILL ends nspawn instead,
// machined keeps the machine registered and the restart that follows
// fails ("Machine … already exists"). Unset or 0: no such deadline.
const StopTimeoutEnv = "ROOTSWAP_STOP_TIMEOUT"

// ExitError is Run's error when systemd-nspawn ended unsuccessfully:
// Status is its exit status, or 128+n when signal n killed it. nspawn has
// said why on stderr; the caller exits with Status and adds nothing.
type ExitError struct{ Status int }

func (e *ExitError) Error() string {
	return fmt.Sprintf("systemd-nspawn exited with status %d", e.Status)
}

// forwarded are the signals run passes on to nspawn: the stops (SIGTERM,
// SIGINT), which nspawn turns into its --kill-signal for the payload, and
// SIGWINCH for its terminal. dropped are caught and ignored: nspawn would
// die of them and leave the container running without it.
var (
	forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGWINCH}
	dropped   = map[os.Signal]string{syscall.SIGHUP: "SIGHUP", syscall.SIGQUIT: "SIGQUIT", syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2"}
)

// Run runs systemd-nspawn on machine name's current tree and waits for it.
// A tree that verify --repair marked broken still runs (the current link
// decides what runs), with a warning on warn. It returns nil when nspawn
// exits 0, an *ExitError when nspawn ran and failed, another error when
// it could not start.
//
// Run stays the process a supervisor watches (a unit's main process), so
// that it learns when a stop was asked for: the first SIGTERM or SIGINT
// leaves a stop record for this run (see stop.go), which `report` turns
// into a stop rather than a failure. The signals in forwarded go on to
// nspawn, which gives the payload its --kill-signal (SIGTERM unless the
// user chose) on the first stop and terminates the container at once on
// the second. If run is killed, nspawn gets SIGKILL, as if run had
// exec'd it (the container's processes are then left to the unit's
// cgroup).
//
// Order: the checks of the options, then the read-only view of the whole
// store, then a stack's mount (stack.go), then the checks that read the
// tree (which must see the merged tree), then the index bookkeeping (the
// last write to the store, from another thread: this one sees the store
// read-only), then the fork from this thread, so nspawn and the container
// only ever see the store read-only, and a run refused by a check records
// nothing. Every step below runs on this goroutine, which the view locks
// to its thread: the fork must happen there.
func Run(s *cache.Store, name string, user []string, opt RunOptions, warn io.Writer) error {
	// Before anything else, so that a stop during the checks is not lost
	// (it ends run before nspawn starts), and SIGHUP never kills run
	// without nspawn hearing of it.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	for sig := range dropped {
		signal.Notify(sigs, sig)
	}
	defer signal.Stop(sigs)
	p, err := resolveRun(s, name, user)
	if err != nil {
		return err
	}
	// Nothing may write the store from this thread after this: the view
	// is read-only.
	if err := fsys.ReadOnlyView(s.Root(), p.tree); err != nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	if p.stack != nil {
		if err := p.stack.mount(nil); err != nil {
			return fmt.Errorf("run %s: %w", name, err)
		}
	}
	if err := p.complete(s, name, user, opt); err != nil {
		return err
	}
	if len(p.shim) > 0 {
		if p.stack != nil {
			err = p.stack.remount(p.shim)
		} else {
			err = p.mountShim()
		}
		if err != nil {
			return fmt.Errorf("run %s: %w", name, err)
		}
	}
	if p.warning != "" {
		fmt.Fprintf(warn, "rootswap: warning: run %s: %s\n", name, p.warning)
	}
	st := onHost(func() runStart { return recordStart(s, name, p.digest, warn) })
	stops := &stopper{s: s, name: name, start: st, warn: warn}
	cmd, err := startNspawn(name, p, sigs, stops)
	if err != nil {
		return err
	}
	return superviseNspawn(name, cmd, sigs, stops, warn)
}

// onHost runs f on a goroutine of its own and waits for it. After
// fsys.ReadOnlyView the calling goroutine's thread sees the store
// read-only; every other thread of the process keeps the host's mount
// namespace (the runtime makes no thread from a locked one, and a locked
// thread runs no other goroutine), so f can write the index.
func onHost[T any](f func() T) T {
	c := make(chan T, 1)
	go func() { c <- f() }()
	return <-c
}

// runPlan is what Run resolved before it writes anything: the tree to
// run, its digest, the nspawn binary and its full argument list.
type runPlan struct {
	tree    string
	digest  digest.Digest
	stack   *stack // nil for a plain tree
	bin     string
	args    []string
	o       nspawnOpts
	warning string   // about the payload, for stderr; "" if none
	shim    []string // directories laid over a tree without /usr (scratch.go)
}

// planRun is the whole plan for machine name's tree read where it lies,
// as Run makes it for a plain tree: resolveRun, then complete. It reads
// the store and writes nothing; its errors name the machine.
func planRun(s *cache.Store, name string, user []string, opt RunOptions) (runPlan, error) {
	p, err := resolveRun(s, name, user)
	if err != nil {
		return runPlan{}, err
	}
	return p, p.complete(s, name, user, opt)
}

// resolveRun resolves machine name's current tree (and whether it is a
// stack) and the nspawn command line for it, and runs the early option
// checks that need no file of the tree (skipped under
// $ROOTSWAP_UNSAFE_SKIP_OPTION_CHECK=1). It reads the store and writes
// nothing; its errors name the machine.
func resolveRun(s *cache.Store, name string, user []string) (runPlan, error) {
	if err := ValidName(name); err != nil {
		return runPlan{}, err
	}
	tree, d, err := TreeFor(s, name)
	if err != nil {
		return runPlan{}, err
	}
	st, err := lookupStack(s, d)
	if err != nil {
		return runPlan{}, fmt.Errorf("run %s: %w", name, err)
	}
	if st != nil {
		tree = st.dir
	}
	bin, err := Nspawn()
	if err != nil {
		return runPlan{}, fmt.Errorf("run %s: %w", name, err)
	}
	args, o, err := nspawnArgs(name, tree, user, MachinedAvailable())
	if err != nil {
		return runPlan{}, err
	}
	if os.Getenv(SkipOptionCheckEnv) != "1" {
		if err := checkSources(name, s.Root(), o); err != nil {
			return runPlan{}, err
		}
	}
	if st != nil && o.userns && (o.ownership == "" || o.ownership == "map") {
		// nspawn 252 says "ID mapped mounts are apparently not available"
		// and fails.
		return runPlan{}, fmt.Errorf("run %s: option --private-users: the tree is stored as layers, and overlayfs cannot be ID-mapped (--private-users-ownership=map); add --private-users-ownership=off (the files then show as owned by nobody inside) or drop --private-users", name)
	}
	return runPlan{tree: tree, digest: d, stack: st, bin: bin, args: args, o: o}, nil
}

// complete runs the checks that read the tree (mount points, the
// directories a FROM-scratch tree lacks) and completes the command line
// with the payload (payload.go). A stack must be mounted by then.
func (p *runPlan) complete(s *cache.Store, name string, user []string, opt RunOptions) error {
	p.shim = scratchShim(p.tree, p.o)
	if os.Getenv(SkipOptionCheckEnv) != "1" {
		if err := checkMountPoints(name, p.tree, p.o, p.shim); err != nil {
			return err
		}
	}
	args, warning, err := runPayload(s, name, p.tree, p.digest, user, p.args, p.o, opt)
	if err != nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	p.args, p.warning = args, warning
	return nil
}

// runStart identifies this run in the stop record: the generation that
// runs (0 when the index did not say) and when it started.
type runStart struct {
	gen uint64
	at  time.Time
}

// recordStart is the run's last write to the index, best effort and in
// one transaction: it counts the start of the current generation (for
// crash-loop detection) and sets the tree's last_used (for gc's
// --unused-for). A busy or unreadable index must not stop a service from
// starting, so it returns no error; a tree marked broken gets a warning
// on warn.
func recordStart(s *cache.Store, name string, d digest.Digest, warn io.Writer) runStart {
	now := time.Now().UTC()
	broken := false
	var gen uint64
	err := s.Update(func(tx *index.Tx) error {
		if t, err := tx.Tree(d); err == nil {
			broken = t.Broken
			t.LastUsed = now
			tx.PutTree(t)
		}
		m, err := tx.Machine(name)
		if err != nil {
			return err
		}
		g, err := tx.Generation(name, m.Current)
		if err != nil || g.Digest != d {
			return err
		}
		g.Starts++
		g.LastStart = now
		gen = g.Number
		return tx.PutGeneration(name, g)
	})
	// The link, not the index, says what runs: a damaged index is worth
	// one warning, never a refusal.
	if errors.Is(err, index.ErrDamaged) {
		fmt.Fprintln(warn, "rootswap: warning: run", name+": starts without the image's config (entrypoint, env, user…) and without recording the run:", err)
	}
	if broken {
		fmt.Fprintf(warn, "rootswap: warning: run %s: tree %s was marked broken by verify --repair; running it anyway (prepare re-imports it)\n", name, d)
	}
	return runStart{gen: gen, at: now}
}

// stopper writes the stop record of a run, once: the first stop asked
// for is the one report sees.
type stopper struct {
	s       *cache.Store
	name    string
	start   runStart
	warn    io.Writer
	stopped bool
}

// record notes that sig asked for a stop. It runs before nspawn hears of
// sig: report may run as soon as nspawn exits. A failed write is a
// warning; the stop goes on.
func (p *stopper) record(sig os.Signal) {
	p.stopped = true
	rec := stopRecord{Generation: p.start.gen, Started: p.start.at, Signal: sig.String(), At: time.Now().UTC(), PID: os.Getpid()}
	if err := writeStop(p.s, p.name, rec); err != nil {
		fmt.Fprintf(p.warn, "rootswap: warning: run %s: %v: report will count this stop as the run's own end\n", p.name, err)
	}
}

// startNspawn forks nspawn as p says, on the calling goroutine: it must be
// the one ReadOnlyView locked, so that the child inherits that thread's
// mount namespace (not the process's) and Pdeathsig, which is tied to
// the forking thread, holds until run exits. A stop that arrived before
// the fork ends run here instead: it is recorded and returned as the
// *ExitError of that signal, and nspawn never starts. Other signals that
// arrived are passed on once nspawn runs.
func startNspawn(name string, p runPlan, sigs <-chan os.Signal, stops *stopper) (*exec.Cmd, error) {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var pending []os.Signal
	for len(sigs) > 0 {
		sig := <-sigs
		if _, ok := dropped[sig]; ok {
			continue
		}
		if sig == syscall.SIGTERM || sig == syscall.SIGINT {
			stops.record(sig)
			return nil, &ExitError{128 + int(sig.(syscall.Signal))}
		}
		pending = append(pending, sig)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: start %s: %w", name, p.bin, err)
	}
	for _, sig := range pending {
		cmd.Process.Signal(sig)
	}
	return cmd, nil
}

// superviseNspawn waits for the running nspawn cmd and returns its
// exitStatus. Meanwhile it passes the forwarded signals on, records the
// first stop, warns about and drops the signals in dropped, and, when
// $ROOTSWAP_STOP_TIMEOUT gives a grace, sends nspawn a second SIGTERM
// once the payload outlives it.
func superviseNspawn(name string, cmd *exec.Cmd, sigs <-chan os.Signal, stops *stopper, warn io.Writer) error {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	grace, _ := time.ParseDuration(os.Getenv(StopTimeoutEnv))
	var deadline <-chan time.Time
	for {
		select {
		case <-deadline:
			fmt.Fprintf(warn, "rootswap: warning: run %s: the payload is still running %s after the stop: terminating it\n", name, grace)
			deadline = nil
			cmd.Process.Signal(syscall.SIGTERM)
		case sig := <-sigs:
			if n, ok := dropped[sig]; ok {
				fmt.Fprintf(warn, "rootswap: warning: run %s: %s ignored: nspawn passes no signal to the payload but its --kill-signal (machinectl kill can)\n", name, n)
				continue
			}
			if !stops.stopped && (sig == syscall.SIGTERM || sig == syscall.SIGINT) {
				stops.record(sig)
				if grace > 0 {
					deadline = time.After(grace)
				}
			}
			cmd.Process.Signal(sig)
		case <-done:
			return exitStatus(cmd.ProcessState)
		}
	}
}

// exitStatus is nil for nspawn's success, else its status as a shell
// reports it.
func exitStatus(ps *os.ProcessState) error {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		return &ExitError{128 + int(ws.Signal())}
	case ps.ExitCode() != 0:
		return &ExitError{ps.ExitCode()}
	}
	return nil
}
