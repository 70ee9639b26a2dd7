package activate

import (
	"slices"
	"strings"
	"testing"
)

// TestNspawnOptions: each choice has its command-line and its .nspawn
// spelling side by side, and Check makes run's refusals.
func TestNspawnOptions(t *testing.T) {
	all := NspawnOptions{Binds: []string{"/a:/b"}, BindsRO: []string{"/c"}, Env: []string{"X=1 2"},
		ReadOnly: true, PrivateUsers: true, NotifyReady: true, Extra: []string{"--hostname=h"}}
	wantArgs := []string{"--bind=/a:/b", "--bind-ro=/c", "--setenv=X=1 2", "--volatile=state",
		"--private-users=pick", "--private-users-ownership=map", "--notify-ready=yes", "--hostname=h"}
	if got := all.Args(); !slices.Equal(got, wantArgs) {
		t.Errorf("Args() = %q, want %q", got, wantArgs)
	}
	wantSettings := []NspawnSetting{{"Exec", "Environment", "X=1 2", true}, {"Exec", "PrivateUsers", "pick", false},
		{"Exec", "NotifyReady", "yes", false}, {"Exec", "KillSignal", "SIGTERM", false}, {"Files", "ReadOnly", "yes", false}, {"Files", "Volatile", "state", false},
		{"Files", "PrivateUsersOwnership", "map", false}, {"Files", "Bind", "/a:/b", false}, {"Files", "BindReadOnly", "/c", false}}
	if got := all.Settings(); !slices.Equal(got, wantSettings) {
		t.Errorf("Settings() = %v, want %v", got, wantSettings)
	}
	if got := (NspawnOptions{}).Args(); len(got) != 0 {
		t.Errorf("no choices: Args() = %q, want none (run adds the overlay)", got)
	}
	if got := (NspawnOptions{}).Settings(); !slices.Equal(got, []NspawnSetting{{"Exec", "KillSignal", "SIGTERM", false}, {"Files", "Volatile", "overlay", false},
		{"Files", "PrivateUsersOwnership", "map", false}}) {
		t.Errorf("no choices: Settings() = %v, want SIGTERM on a stop, the overlay and map ownership spelled out", got)
	}
	if got := (NspawnOptions{Extra: []string{"--kill-signal=SIGINT"}}).Settings(); slices.Contains(got, NspawnSetting{"Exec", "KillSignal", "SIGTERM", false}) {
		t.Errorf("the user's --kill-signal: Settings() = %v still has KillSignal=SIGTERM", got)
	}

	if err := all.Check("web", []string{"/app", "-U"}); err != nil {
		t.Errorf("Check: %v (an -U in the command is the command's)", err)
	}
	for _, tc := range []struct {
		o    NspawnOptions
		want string
	}{
		{NspawnOptions{Env: []string{"NOEQUALS"}}, `--setenv "NOEQUALS": want VAR=VALUE`},
		{NspawnOptions{Extra: []string{"-U"}}, "run web: option -U"},
		{NspawnOptions{ReadOnly: true, Extra: []string{"--volatile=no"}}, "run web: option --volatile=no"},
	} {
		if err := tc.o.Check("web", nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
