package activate

import (
	"fmt"
	"strings"
)

// NspawnOptions are the systemd-nspawn choices rootswap offers by name
// (the unit generator's flags), next to the option check in run.go, so
// that how each choice is spelled on nspawn's command line (Args) and in
// a .nspawn file (Settings) is written down in one package. None of them
// is -U: its fallback is a recursive chown that would rewrite files every
// tree shares.
type NspawnOptions struct {
	Binds        []string // SRC[:DST] bind mounts
	BindsRO      []string // SRC[:DST] read-only bind mounts
	Env          []string // VAR=VALUE
	ReadOnly     bool     // the tree read-only with a tmpfs /var, not a writable overlay
	PrivateUsers bool     // a user namespace mapped onto the tree, never chowning it
	NotifyReady  bool     // the payload reports readiness itself
	Extra        []string // more nspawn options, as given; on the command line only
}

// Args are the options `rootswap run` passes on to nspawn for o.
func (o NspawnOptions) Args() []string {
	var a []string
	for _, b := range o.Binds {
		a = append(a, "--bind="+b)
	}
	for _, b := range o.BindsRO {
		a = append(a, "--bind-ro="+b)
	}
	for _, e := range o.Env {
		a = append(a, "--setenv="+e)
	}
	if o.ReadOnly {
		// The tree read-only with a tmpfs /var, instead of an overlay on
		// everything.
		a = append(a, "--volatile=state")
	}
	if o.PrivateUsers {
		a = append(a, "--private-users=pick", "--private-users-ownership=map")
	}
	if o.NotifyReady {
		a = append(a, "--notify-ready=yes")
	}
	return append(a, o.Extra...)
}

// Check makes the refusals `rootswap run NAME` would make of o and the
// command, now rather than at the first start. Its errors name the
// option; they wrap no sentinel.
func (o NspawnOptions) Check(name string, command []string) error {
	for _, e := range o.Env {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("--setenv %q: want VAR=VALUE", e)
		}
	}
	args := o.Args()
	if len(command) > 0 {
		// "--": a command word that looks like an option stays the
		// command, as run's command line has it.
		args = append(append(args, "--"), command...)
	}
	_, err := NspawnArgs(name, "/", args, false)
	return err
}

// NspawnSetting is one line of a .nspawn file (systemd.nspawn(5)).
type NspawnSetting struct {
	Section, Key, Value string
	Word                bool // Value is one word of a list the file's parser splits: quote it
}

// Settings are o as .nspawn file settings, in the order they are
// written: the same choices as Args, with the overlay (Volatile=overlay)
// and PrivateUsersOwnership=map spelled out, since the file has no
// `rootswap run` to add them. Extra has no file form and is left out.
func (o NspawnOptions) Settings() []NspawnSetting { return o.settings("SIGTERM") }

// settings are Settings with stop as what a stop sends PID 1 unless
// Extra chooses it.
func (o NspawnOptions) settings(stop string) []NspawnSetting {
	var s []NspawnSetting
	for _, e := range o.Env {
		s = append(s, NspawnSetting{"Exec", "Environment", e, true})
	}
	if o.PrivateUsers {
		s = append(s, NspawnSetting{Section: "Exec", Key: "PrivateUsers", Value: "pick"})
	}
	if o.NotifyReady {
		s = append(s, NspawnSetting{Section: "Exec", Key: "NotifyReady", Value: "yes"})
	}
	if !ChoosesStop(o.Extra) {
		// SIGTERM to the payload on a stop (nspawn's default without -b is
		// SIGKILL), as `rootswap run` does.
		s = append(s, NspawnSetting{Section: "Exec", Key: "KillSignal", Value: stop})
	}
	if o.ReadOnly {
		s = append(s, NspawnSetting{Section: "Files", Key: "ReadOnly", Value: "yes"},
			NspawnSetting{Section: "Files", Key: "Volatile", Value: "state"})
	} else {
		s = append(s, NspawnSetting{Section: "Files", Key: "Volatile", Value: "overlay"})
	}
	s = append(s, NspawnSetting{Section: "Files", Key: "PrivateUsersOwnership", Value: "map"})
	for _, b := range o.Binds {
		s = append(s, NspawnSetting{Section: "Files", Key: "Bind", Value: b})
	}
	for _, b := range o.BindsRO {
		s = append(s, NspawnSetting{Section: "Files", Key: "BindReadOnly", Value: b})
	}
	return s
}
