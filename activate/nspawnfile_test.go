package activate

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/storetest"
)

// TestFileSettings: the settings `nspawn-settings` writes are what run
// would do with the current tree's config, read at each call: entrypoint
// and cmd behind the init with the image's user, env, working directory
// and stop signal; the unit's choices win field by field; a new config
// is the next call's.
func TestFileSettings(t *testing.T) {
	s := newStore(t)
	d := storetest.Import(t, s, "img:1", storetest.File{Name: "etc/passwd", Content: "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"})
	if _, _, err := Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	put := func(raw string) {
		t.Helper()
		if err := s.Update(func(tx *index.Tx) error { return tx.PutConfig(d, []byte(raw)) }); err != nil {
			t.Fatal(err)
		}
	}
	settings := func(o NspawnOptions, opt RunOptions) (string, error) {
		t.Helper()
		st, command, err := FileSettings(s, "web", "/bin/rs", o, opt)
		var lines []string
		for _, x := range st {
			lines = append(lines, fmt.Sprintf("%s.%s=%s", x.Section, x.Key, x.Value))
		}
		return strings.Join(lines, "\n") + "\nParameters=" + strings.Join(command, " "), err
	}
	has := func(got string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(got+"\n", w+"\n") {
				t.Errorf("settings:\n%s\nlack %s", got, w)
			}
		}
	}
	// No config: nspawn's shell, the unit's own settings.
	got, err := settings(NspawnOptions{}, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Exec.KillSignal=SIGTERM", "Files.Volatile=overlay", "Parameters=")

	put(`{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/ep"],"Cmd":["serve"],"Env":["A=1","B=2"],"User":"app","WorkingDir":"/w","StopSignal":"SIGQUIT"},"rootfs":{"type":"layers","diff_ids":[]}}`)
	got, err = settings(NspawnOptions{Env: []string{"B=mine"}, BindsRO: []string{"/etc/ssl"}}, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Exec.KillSignal=SIGQUIT", "Exec.Environment=B=mine", "Exec.Environment=A=1", "Exec.Environment=HOME=/home/app",
		"Exec.Environment=USER=app", "Exec.WorkingDirectory=/w", "Files.BindReadOnly=/etc/ssl", "Files.BindReadOnly=/bin/rs:/run/rootswap-init",
		"Parameters=/run/rootswap-init container-init --user 1000:1000:1000 -- /ep serve")
	if strings.Contains(got, "B=2") || strings.Count(got, "KillSignal") != 1 {
		t.Errorf("the unit's --setenv B and the image's STOPSIGNAL must each win once:\n%s", got)
	}
	// The unit's choices in --nspawn-opt win too; --entrypoint drops CMD;
	// --no-init leaves the binary only to switch user.
	got, err = settings(NspawnOptions{Extra: []string{"--kill-signal=SIGINT", "--chdir=/x", "--user=root"}}, RunOptions{NoInit: true, Entrypoint: "/other", EntrypointSet: true})
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Parameters=/other")
	for _, no := range []string{"KillSignal", "WorkingDirectory", "BindReadOnly", "HOME="} {
		if strings.Contains(got, no) {
			t.Errorf("with the unit's own --kill-signal, --chdir, --user and --no-init the settings hold %s:\n%s", no, got)
		}
	}
	got, err = settings(NspawnOptions{}, RunOptions{NoInit: true})
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Parameters=/run/rootswap-init container-init --user 1000:1000:1000 --exec -- /ep serve")

	// The next version's config is the next call's.
	put(`{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/v2"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	got, err = settings(NspawnOptions{}, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Exec.KillSignal=SIGTERM", "Parameters=/run/rootswap-init container-init --user 0:0:0 -- /v2")

	// What run refuses, this refuses, naming the machine.
	put(`{"architecture":"amd64","os":"linux","config":{"User":"nobody"},"rootfs":{"type":"layers","diff_ids":[]}}`)
	if _, err := settings(NspawnOptions{}, RunOptions{}); err == nil || !strings.Contains(err.Error(), "web") {
		t.Errorf("an image with no command and an unknown user: %v", err)
	}
	if _, err := settings(NspawnOptions{Extra: []string{"-U"}}, RunOptions{}); err == nil {
		t.Errorf("-U: no refusal")
	}
}
