package activate

import (
	"strings"
	"testing"
)

// TestPayloadInit: rootswap's init goes in front of the command, bound
// read-only at /run/rootswap-init, unless the run says there must be none
// or there is an init already.
func TestPayloadInit(t *testing.T) {
	const init = "--bind-ro=/bin/rs:/run/rootswap-init -- /run/rootswap-init container-init --"
	const base = "--machine web --directory /t --volatile=overlay --register=no --keep-unit"
	for _, tc := range []struct {
		opt  RunOptions
		user []string
		want string
	}{
		{RunOptions{}, []string{"/bin/sh", "-c", "x"}, base + " --kill-signal=SIGTERM " + init + " /bin/sh -c x"},
		{RunOptions{}, []string{"-E", "A=1", "--", "-x"}, base + " --kill-signal=SIGTERM -E A=1 " + init + " -x"},
		{RunOptions{}, []string{"--kill-signal=SIGQUIT", "app"}, base + " --kill-signal=SIGQUIT " + init + " app"},
		{RunOptions{NoInit: true}, []string{"/bin/sh"}, base + " --kill-signal=SIGTERM -- /bin/sh"},
		{RunOptions{}, []string{"-b"}, base + " -b"},
		{RunOptions{}, []string{"--as-pid2", "/bin/sh"}, base + " --kill-signal=SIGTERM --as-pid2 -- /bin/sh"},
		{RunOptions{}, []string{"-qa", "/bin/sh"}, base + " --kill-signal=SIGTERM -qa -- /bin/sh"},
		{RunOptions{}, []string{"--notify-ready=yes", "/bin/sh"}, base + " --kill-signal=SIGTERM --notify-ready=yes " + init + " /bin/sh"},
		{RunOptions{}, []string{"--notify-ready=no", "/bin/sh"}, base + " --kill-signal=SIGTERM --notify-ready=no " + init + " /bin/sh"},
		{RunOptions{}, nil, base + " --kill-signal=SIGTERM"},
		{RunOptions{}, []string{"--read-only"}, base[:strings.Index(base, " --volatile")] + " --register=no --keep-unit --kill-signal=SIGTERM --read-only"},
		{RunOptions{}, []string{"/usr/bin/tini", "--", "app"}, base + " --kill-signal=SIGTERM -- /usr/bin/tini -- app"},
		{RunOptions{}, []string{"/init"}, base + " --kill-signal=SIGTERM -- /init"},
		{RunOptions{}, []string{"dumb-init", "app"}, base + " --kill-signal=SIGTERM -- dumb-init app"},
	} {
		args, o, err := nspawnArgs("web", "/t", tc.user, false)
		if err != nil {
			t.Fatalf("%q: %v", tc.user, err)
		}
		_, cmd := splitCommand(tc.user, tc.user, o)
		got, _, err := payloadArgs(args, tc.user, o, tc.opt, imageRun{command: cmd}, func() (string, string, error) { return "/bin/rs", "", nil })
		if err != nil {
			t.Fatalf("%q: %v", tc.user, err)
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("%+v %q:\ngot  %s\nwant %s", tc.opt, tc.user, g, tc.want)
		}
	}
}
