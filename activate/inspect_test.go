package activate

import (
	"context"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestRunReadsConfigAtStart: run takes the command, env, user and stop
// signal from the config recorded with the current tree, read at every
// start: a new config is the next start's command. Inspect and Trees show
// the same config.
func TestRunReadsConfigAtStart(t *testing.T) {
	s := newStore(t)
	// A plain tree: planRun plans from the tree's directory, which Run
	// has mounted a stack on by then (run_stack_test.go covers stacks).
	d := storetest.ImportPlain(t, s, "img:1", storetest.File{Name: "etc/passwd", Content: "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"},
		storetest.File{Name: "etc/group", Content: "staff:x:50:app\n"})
	if _, _, err := Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ROOTSWAP_NSPAWN", "/bin/true")
	put := func(raw string) {
		t.Helper()
		if err := s.Update(func(tx *index.Tx) error { return tx.PutConfig(d, []byte(raw)) }); err != nil {
			t.Fatal(err)
		}
	}
	plan := func(user ...string) string {
		t.Helper()
		p, err := planRun(s, "web", user, RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(p.args, " ")
	}
	// No config recorded: the command as given, or nspawn's shell.
	if got := plan(); strings.Contains(got, "container-init") || strings.Contains(got, "--setenv") {
		t.Errorf("no config: %s", got)
	}
	put(`{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/ep"],"Cmd":["serve"],"Env":["A=1"],"User":"app","WorkingDir":"/w","StopSignal":"SIGQUIT","ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[]}}`)
	got := plan()
	for _, want := range []string{"--kill-signal=SIGQUIT", "--setenv=A=1", "--setenv=HOME=/home/app", "--chdir=/w",
		"container-init --user 1000:1000:1000,50 -- /ep serve"} {
		if !strings.Contains(got, want) {
			t.Errorf("with a config: %s\nlacks %s", got, want)
		}
	}
	if got := plan("--", "other"); !strings.HasSuffix(got, "-- /ep other") {
		t.Errorf("COMMAND replaces CMD: %s", got)
	}
	put(`{"architecture":"amd64","os":"linux","config":{"Cmd":["/v2"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	if got := plan(); !strings.HasSuffix(got, "container-init --user 0:0:0 -- /v2") || strings.Contains(got, "SIGQUIT") {
		t.Errorf("the next start after the config changed: %s", got)
	}

	info, err := Inspect(s, d)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config == nil || strings.Join(info.Config.Cmd, " ") != "/v2" || info.Config.Platform != "linux/amd64" || info.ConfigVerified {
		t.Errorf("Inspect: %+v config %+v", info, info.Config)
	}
	rows, err := Trees(s)
	if err != nil || len(rows) != 1 || rows[0].Config == nil || rows[0].Config.Cmd[0] != "/v2" {
		t.Errorf("Trees: %+v, %v", rows, err)
	}
}
