package activate

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/util"

	"github.com/rootswap/rootswap/cache"
)

// nspawnValued lists the systemd-nspawn options that take their value as a
// separate argument, so NspawnArgs can tell options from the command.
var nspawnValued = map[string]bool{
	"-D": true, "--directory": true, "--template": true, "-i": true, "--image": true,
	"-u": true, "--user": true, "-M": true, "--machine": true, "-E": true, "--setenv": true,
	"-p": true, "--port": true, "-S": true, "--slice": true, "-Z": true, "--selinux-context": true,
	"-L": true, "--selinux-apifs-context": true, "--bind": true, "--bind-ro": true, "--tmpfs": true,
	"--overlay": true, "--overlay-ro": true, "--network-interface": true, "--network-macvlan": true,
	"--network-ipvlan": true, "--network-veth-extra": true, "--network-bridge": true,
	"--network-zone": true, "--network-namespace-path": true, "--chdir": true, "--pivot-root": true,
	"--property": true, "--kill-signal": true, "--link-journal": true, "--capability": true,
	"--drop-capability": true, "--system-call-filter": true, "--rlimit": true, "--oom-score-adjust": true,
	"--cpu-affinity": true, "--personality": true, "--resolv-conf": true, "--timezone": true,
	"--console": true, "--uuid": true, "--hostname": true, "--load-credential": true,
	"--set-credential": true, "--inaccessible": true, "--notify-ready": true, "--root-hash": true,
	"--root-hash-sig": true, "--verity-data": true, "--bind-user": true, "--settings": true,
	"--private-users-ownership": true, "--register": true,
}

// NspawnArgs builds the systemd-nspawn argument list for running tree under
// machine name with the user's arguments (options, then the command).
// The container never writes the tree: it gets --volatile=overlay unless
// the user chose another volatile mode that also keeps the tree read-only.
// Options that would change which tree runs, or chown it, are refused.
// registered says whether nspawn may register with machined.
func NspawnArgs(name, tree string, user []string, registered bool) ([]string, error) {
	volatile := false
	for i := 0; i < len(user); i++ {
		a := user[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			break // the command starts here
		}
		opt, val, hasVal := strings.Cut(a, "=")
		if !hasVal && nspawnValued[opt] && i+1 < len(user) {
			val = user[i+1]
			i++
		}
		switch {
		case opt == "-D" || opt == "--directory" || opt == "-i" || opt == "--image" || opt == "-M" || opt == "--machine" || opt == "--template":
			return nil, fmt.Errorf("run %s: option %s: rootswap sets the machine and its tree itself", name, opt)
		case opt == "--volatile":
			if val == "no" || val == "false" || val == "0" {
				return nil, fmt.Errorf("run %s: option %s: the container would write the shared store", name, a)
			}
			volatile = true
		case opt == "-U" || opt == "--private-users-chown" || (opt == "--private-users-ownership" && val == "chown"):
			return nil, fmt.Errorf("run %s: option %s: would chown the shared tree; use --private-users-ownership=map", name, a)
		case len(opt) > 2 && opt[1] != '-' && clusterHasU(opt[1:]):
			return nil, fmt.Errorf("run %s: option %s: -U would chown the shared tree; use --private-users-ownership=map", name, a)
		}
	}
	args := []string{"--machine", name, "--directory", tree}
	if !volatile {
		args = append(args, "--volatile=overlay")
	}
	if !registered {
		args = append(args, "--register=no", "--keep-unit")
	}
	return append(args, user...), nil
}

// Registered reports whether machined can take a registration: systemd is
// PID 1 and the system bus is there. Elsewhere (build machines, plain
// containers) nspawn must be told --register=no --keep-unit.
func Registered() bool {
	if !util.IsRunningSystemd() {
		return false
	}
	_, err := os.Stat("/run/dbus/system_bus_socket")
	return err == nil
}

// Nspawn is the systemd-nspawn binary: $ROOTSWAP_NSPAWN or found in $PATH.
func Nspawn() (string, error) {
	if p := os.Getenv("ROOTSWAP_NSPAWN"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return "", fmt.Errorf("systemd-nspawn not found (install systemd-container, or set ROOTSWAP_NSPAWN): %w", err)
	}
	return p, nil
}

// Run replaces the process with systemd-nspawn on machine name's current
// tree. It returns only on error.
func Run(s *cache.Store, name string, user []string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	tree, d, err := TreeFor(s, name)
	if err != nil {
		return err
	}
	bin, err := Nspawn()
	if err != nil {
		return err
	}
	args, err := NspawnArgs(name, tree, user, Registered())
	if err != nil {
		return err
	}
	// Best effort, one transaction: the run's start feeds crash-loop
	// detection and last_used feeds gc's --unused-for; a busy index must
	// not stop a service from starting.
	now := time.Now().UTC()
	s.Update(func(tx *cache.Tx) error {
		if t, err := tx.Tree(d); err == nil {
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
		return tx.PutGeneration(name, g)
	})
	return syscall.Exec(bin, append([]string{bin}, args...), os.Environ())
}

// clusterHasU reports whether a cluster of short options ("bU") holds -U
// before any option that takes the rest of the cluster as its value.
func clusterHasU(cluster string) bool {
	for _, c := range cluster {
		if c == 'U' {
			return true
		}
		if nspawnValued["-"+string(c)] {
			return false
		}
	}
	return false
}
