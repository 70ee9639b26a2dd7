package activate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestFileSettings: the settings `nspawn-settings` writes are what run
// would do with the current tree's config, read at each call: entrypoint
// and cmd behind the init with the image's user, env, working directory
// and stop signal; the unit's choices win field by field; a new config
// is the next call's.
func TestFileSettings(t *testing.T) {
	s := newStore(t)
	// A plain tree: a stack's files FileSettings reads from the mount
	// prepare --link-machines made of it.
	d := storetest.ImportPlain(t, s, "img:1", storetest.File{Name: "etc/passwd", Content: "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"})
	if _, _, err := Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	put := func(raw string) {
		t.Helper()
		if err := s.Update(func(tx *index.Tx) error { return tx.PutConfig(d, []byte(raw)) }); err != nil {
			t.Fatal(err)
		}
	}
	settings := func(o NspawnOptions, opt RunOptions, user ...string) (string, error) {
		t.Helper()
		st, command, err := FileSettings(s, "web", "/bin/rs", o, user, opt)
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
	// No config: nspawn's shell, the unit's own settings; the unit's
	// COMMAND as it is, behind the init.
	got, err := settings(NspawnOptions{}, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Exec.KillSignal=SIGTERM", "Files.Volatile=overlay", "Parameters=")
	got, err = settings(NspawnOptions{}, RunOptions{}, "/app", "--serve")
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Files.BindReadOnly=/bin/rs:/run/rootswap-init", "Parameters=/run/rootswap-init container-init -- /app --serve")

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
	// The unit's COMMAND replaces CMD, as docker run IMAGE COMMAND does,
	// with the image's user, env and working directory still applying; a
	// word that looks like an option stays the command; with --entrypoint
	// it follows the new entrypoint.
	got, err = settings(NspawnOptions{}, RunOptions{}, "-x", "a b")
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Exec.KillSignal=SIGQUIT", "Exec.Environment=A=1", "Exec.Environment=B=2", "Exec.WorkingDirectory=/w",
		"Parameters=/run/rootswap-init container-init --user 1000:1000:1000 -- /ep -x a b")
	got, err = settings(NspawnOptions{}, RunOptions{Entrypoint: "/other", EntrypointSet: true}, "c")
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Parameters=/run/rootswap-init container-init --user 1000:1000:1000 -- /other c")

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
	// -b boots the tree's init: Boot=yes, which the file must say, since
	// under --settings=override its Boot= beats the drop-in's -b; nspawn's
	// own stop signal for it; no init in front.
	got, err = settings(NspawnOptions{Extra: []string{"-b"}}, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	has(got, "Exec.Boot=yes", "Parameters=")
	if strings.Contains(got, "KillSignal") || strings.Contains(got, "rootswap-init") {
		t.Errorf("-b: the settings hold a KillSignal= or the init:\n%s", got)
	}
	if _, err := settings(NspawnOptions{Extra: []string{"-U"}}, RunOptions{}); err == nil {
		t.Errorf("-U: no refusal")
	}
}

// TestFileSettingsStack: a tree stored as layers is read where
// --link-machines mounted it (its directory holds only the layer links):
// the image's USER resolves against the merged tree's /etc/passwd.
// Unmounted, the settings are refused in one line saying what to run.
func TestFileSettingsStack(t *testing.T) {
	if !inChildNamespace(t) {
		return
	}
	ctx := context.Background()
	s := newStore(t)
	name := fmt.Sprintf("settings%d", os.Getpid())
	t.Cleanup(func() {
		// The mount goes with the namespace; its directory is the host's.
		mnt := filepath.Join(MachineMounts, name)
		Umount(s, mnt)
		os.Remove(mnt)
	})
	d := importStack(t, s, []layerFile{{Name: "etc", Dir: true}, {Name: "etc/passwd", Content: "app:x:1000:1000::/home/app:/bin/sh\n"}},
		[]layerFile{{Name: "bin", Dir: true}})
	if _, _, err := Activate(ctx, s, name, d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	raw := `{"architecture":"amd64","os":"linux","config":{"Cmd":["/app"],"User":"app"},"rootfs":{"type":"layers","diff_ids":[]}}`
	if err := s.Update(func(tx *index.Tx) error { return tx.PutConfig(d, []byte(raw)) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := FileSettings(s, name, "/bin/rs", NspawnOptions{}, nil, RunOptions{}); err == nil || !strings.Contains(err.Error(), "prepare --link-machines "+name) {
		t.Errorf("an unmounted stack: %v", err)
	}
	if err := LinkMachine(s, name, filepath.Join(t.TempDir(), "machines")); err != nil {
		t.Fatal(err)
	}
	_, command, err := FileSettings(s, name, "/bin/rs", NspawnOptions{}, nil, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(command, " "); got != "/run/rootswap-init container-init --user 1000:1000:1000 -- /app" {
		t.Errorf("Parameters= %s", got)
	}
}
