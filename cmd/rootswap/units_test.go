package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/policy"
	"github.com/rootswap/rootswap/snapshot/storetest"
	"github.com/rootswap/rootswap/unit"
)

func TestUnitCommandLine(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"unit"}, 2},
		{[]string{"unit", "--gc-timer", "web", "img"}, 2},
		{[]string{"unit", "web"}, 2},
		{[]string{"unit", "web", "img"}, 0},
		{[]string{"unit", "web", "img", "--", "/bin/app", "-x"}, 0},
		{[]string{"unit", "web", "img", "extra"}, 2},
		{[]string{"unit", "-bad", "img"}, 2},
		{[]string{"unit", "web", "img", "--nspawn-opt=-U"}, 2},
		{[]string{"unit", "web", "img", "--setenv", "NOEQUALS"}, 2},
		{[]string{"unit", "--gc-timer"}, 0},
	} {
		if code, out := rootswapIn(t, store, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s", tc.args, code, tc.code, out)
		}
	}
}

// TestUnitFlags: the command is flags and one call: what it prints is
// what the unit package makes of the spec its flags spell.
func TestUnitFlags(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	bin, _ := os.Executable()
	spec := unit.Spec{Name: "web", Image: "reg/web:1", Daemon: true, Command: []string{"/app", "-x"},
		Nspawn: activate.NspawnOptions{Binds: []string{"/srv/a:/data"}, BindsRO: []string{"/etc/ssl"}, Env: []string{"X=1 2"},
			ReadOnly: true, PrivateUsers: true, NotifyReady: true, Extra: []string{"--hostname=h"}},
		RestartSec: 7 * time.Second, HealthyAfter: 45 * time.Second}
	flags := []string{"--unit-dir", "/u", "--bind", "/srv/a:/data", "--bind-ro", "/etc/ssl", "--setenv", "X=1 2", "--read-only",
		"--private-users", "--notify", "--nspawn-opt=--hostname=h", "--restart-sec", "7s", "--healthy-after", "45s", "web", "reg/web:1", "--", "/app", "-x"}
	for _, tc := range []struct {
		flag string
		make func(bin, root string, sp unit.Spec) ([]unit.File, error)
	}{{"", unit.ServiceFiles}, {"--nspawn-file", unit.NspawnFiles}} {
		args := append([]string{"unit"}, flags...)
		if tc.flag != "" {
			args = append([]string{"unit", tc.flag}, flags...)
		}
		got := mustRun(t, store, args...)
		files, err := tc.make(bin, store, spec)
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		if err := unit.Print(&want, "/u", files); err != nil {
			t.Fatal(err)
		}
		if got != want.String() {
			t.Errorf("rootswap %q printed\n%s\nwant\n%s", args, got, want.String())
		}
	}
}

// TestUnitSource: a bare IMAGE is the daemon's unless --source registry
// makes it a registry's, and the unit then names docker:// itself, so it
// does not depend on the environment it starts in.
func TestUnitSource(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	for _, tc := range []struct {
		args        []string
		image       string
		wantsDocker bool
	}{
		{[]string{"unit", "web", "reg/web:1"}, "reg/web:1", true},
		{[]string{"unit", "web", "docker-daemon:reg/web:1"}, "docker-daemon:reg/web:1", true},
		{[]string{"unit", "web", "docker://reg/web:1"}, "docker://reg/web:1", false},
		{[]string{"--source", "registry", "unit", "web", "reg/web:1"}, "docker://reg/web:1", false},
		{[]string{"unit", "web", "oci:/srv/images/web:1"}, "oci:/srv/images/web:1", false},
	} {
		got := mustRun(t, store, tc.args...)
		if !strings.Contains(got, " prepare --pull web "+tc.image+"\n") || strings.Contains(got, "docker.service") != tc.wantsDocker {
			t.Errorf("rootswap %q printed\n%s", tc.args, got)
		}
	}
	if code, out := rootswapIn(t, store, "--source", "hub", "unit", "web", "reg/web:1"); code != 2 || !strings.Contains(out, `--source "hub"`) {
		t.Errorf("--source hub: exit %d\n%s", code, out)
	}
	// A malformed IMAGE is a usage error that names it, and creates no
	// store.
	for _, args := range [][]string{{"unit", "web", "docker://"}, {"import", "docker://UPPER/x:y"}, {"prepare", "web", "oci:"}, {"import", "docker-daemon:"}} {
		image := args[len(args)-1]
		if code, out := rootswapIn(t, store, args...); code != 2 || !strings.Contains(out, strconv.Quote(image)) {
			t.Errorf("%q: exit %d\n%s", args, code, out)
		}
		if _, err := os.Stat(store); !os.IsNotExist(err) {
			t.Fatalf("%q created a store: %v", args, err)
		}
	}
}

// TestUnitAutoUpdateAndTimer: --auto-update marks the machine in the
// store (creating it if need be) where update without NAME finds it, and
// --auto-update=false unmarks it; --update-timer prints the service and
// timer, with --on-calendar; the flags that do not go together are usage
// errors.
func TestUnitAutoUpdateAndTimer(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"unit", "--update-timer", "--gc-timer"}, 2},
		{[]string{"unit", "--update-timer", "web", "img"}, 2},
		{[]string{"unit", "--update-timer", "--auto-update"}, 2},
		{[]string{"unit", "--on-calendar", "weekly", "web", "img"}, 2},
		{[]string{"update", "--max-parallel", "0"}, 2},
	} {
		if code, out := rootswapIn(t, store, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s", tc.args, code, tc.code, out)
		}
	}
	out := mustRun(t, store, "unit", "--update-timer", "--on-calendar", "Mon 04:00")
	for _, want := range []string{"# /etc/systemd/system/rootswap-update.service", "update\n", "Nice=19", "IOSchedulingClass=idle",
		"# /etc/systemd/system/rootswap-update.timer", "OnCalendar=Mon 04:00"} {
		if !strings.Contains(out, want) {
			t.Errorf("unit --update-timer lacks %q:\n%s", want, out)
		}
	}
	mustRun(t, store, "unit", "--auto-update", "web", "docker://reg.example/web:1")
	if out := mustRun(t, store, "update", "--dry-run"); !strings.Contains(out, "web") || !strings.Contains(out, "docker://reg.example/web:1") {
		t.Errorf("update --dry-run after --auto-update:\n%s", out)
	}
	mustRun(t, store, "unit", "--auto-update=false", "web", "docker://reg.example/web:1")
	if out := mustRun(t, store, "update", "--dry-run"); !strings.Contains(out, "no machine to update") {
		t.Errorf("update --dry-run after --auto-update=false:\n%s", out)
	}
}

// TestUnitWritesAbsolutePathsAndCarriesFlags: a unit runs in / with
// neither the shell's variables nor its flags, so unit writes a local
// source's PATH absolute and gives prepare the global flags (or their
// variables) that change what it does.
func TestUnitWritesAbsolutePathsAndCarriesFlags(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for image, want := range map[string]string{
		"oci:imgs/web:v1":                  "oci:" + dir + "/imgs/web:v1",
		"oci-archive:web.tar:v1":           "oci-archive:" + dir + "/web.tar:v1",
		"docker-archive:../save.tar.gz":    "docker-archive:" + dir + "/../save.tar.gz",
		"docker-archive:/srv/save.tar:a:1": "docker-archive:/srv/save.tar:a:1",
		"docker://reg/web:1":               "docker://reg/web:1",
	} {
		code, out := cli(t, "--root", "store", "unit", "web", image)
		if code != 0 || !strings.Contains(out, " --root "+dir+"/store prepare --pull web "+want+"\n") {
			t.Errorf("unit web %s: exit %d, want prepare of %s\n%s", image, code, want, out)
		}
	}
	t.Setenv("ROOTSWAP_REGISTRY_TIMEOUT", "30s")
	t.Setenv("ROOTSWAP_REGISTRIES_CONF", "conf/registries.conf")
	t.Setenv("ROOTSWAP_POLICY", "conf/policy.json")
	t.Setenv("ROOTSWAP_PLATFORM", "linux/arm64")
	for _, nspawnFile := range []string{"", "--nspawn-file"} {
		args := []string{"--root", "/srv/store", "--source", "registry", "unit", "web", "reg/web:1"}
		if nspawnFile != "" {
			args = append(args, nspawnFile, "--", "/app")
		}
		code, out := cli(t, args...)
		want := " --root /srv/store --source=registry --registry-timeout=30s --registries-conf=" + dir + "/conf/registries.conf --policy=" + dir + "/conf/policy.json --platform=linux/arm64 prepare --pull "
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("%q: exit %d, want %q in\n%s", args, code, want, out)
		}
		// run and report need none of them.
		if strings.Count(out, "--registry-timeout") != 1 {
			t.Errorf("%q: the flags are not on prepare alone:\n%s", args, out)
		}
	}
}

// TestUnitInstallNoticesNoPolicy: installing a machine's unit where no
// signature policy exists says so once; with a policy it says nothing,
// and a malformed policy fails the install before any unit is written.
func TestUnitInstallNoticesNoPolicy(t *testing.T) {
	dir := t.TempDir()
	defaultPolicyFile = filepath.Join(dir, "policy.json") // missing
	t.Cleanup(func() { defaultPolicyFile = policy.DefaultFile })
	install := func() (int, string) {
		return execute(t, "unit", "--install", "--unit-dir", t.TempDir(), "web", "docker://registry.example/web:1", "--", "/app")
	}
	if code, out := install(); code != 0 || strings.Count(out, "no signature policy restricts the image") != 1 {
		t.Errorf("no policy: exit %d, want one notice:\n%s", code, out)
	}
	if code, out := execute(t, "unit", "web", "docker://registry.example/web:1", "--", "/app"); code != 0 || strings.Contains(out, "signature policy") {
		t.Errorf("printing a unit: exit %d, want no notice:\n%s", code, out)
	}
	if err := os.WriteFile(defaultPolicyFile, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := install(); code != 0 || strings.Contains(out, "signature policy") {
		t.Errorf("with a policy: exit %d, want no notice:\n%s", code, out)
	}
	if err := os.WriteFile(defaultPolicyFile, []byte(`{"default":[{"type":"nonsense"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	units := t.TempDir()
	code, out := execute(t, "unit", "--install", "--unit-dir", units, "web", "docker://registry.example/web:1", "--", "/app")
	if entries, _ := os.ReadDir(units); code != 1 || !strings.Contains(out, "policy.json") || len(entries) != 0 {
		t.Errorf("malformed policy: exit %d, %d files written, want exit 1 naming the file and none:\n%s", code, len(entries), out)
	}
}

// TestNspawnSettingsFromUnit: the nspawn-settings line that `unit
// --nspawn-file` without a COMMAND puts in the drop-in parses as this
// binary's command line, and writes the unit's choices and the image's
// config into NAME.nspawn.
func TestNspawnSettingsFromUnit(t *testing.T) {
	root, d := storeWithMachine(t)
	s := storetest.Open(t, root)
	raw := `{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/ep"],"Cmd":["serve"],"Env":["A=1"],"WorkingDir":"/w","StopSignal":"SIGINT"},"rootfs":{"type":"layers","diff_ids":[]}}`
	if err := s.Update(func(tx *index.Tx) error { return tx.PutConfig(d, []byte(raw)) }); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, root, "unit", "--nspawn-file", "--bind-ro=/etc/ssl", "--setenv=B=2", "--read-only", "--nspawn-opt=--hostname=h", "web", "img:1")
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ExecStartPre=") && strings.Contains(l, " nspawn-settings ") {
			line = strings.TrimPrefix(l, "ExecStartPre=")
		}
	}
	if line == "" {
		t.Fatalf("no nspawn-settings line in\n%s", out)
	}
	dir := t.TempDir()
	args := strings.Fields(line)[1:] // no quoting in these words
	code, msg := cli(t, append(append(args[:len(args)-1:len(args)-1], "--dir", dir), args[len(args)-1])...)
	if code != 0 {
		t.Fatalf("%s: exit %d\n%s", line, code, msg)
	}
	b, err := os.ReadFile(filepath.Join(dir, "web.nspawn"))
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := os.Executable()
	for _, want := range []string{"Parameters=/run/rootswap-init container-init --user 0:0:0 -- /ep serve", "Environment=B=2", "Environment=A=1",
		"WorkingDirectory=/w", "KillSignal=SIGINT", "ReadOnly=yes", "BindReadOnly=/etc/ssl", "BindReadOnly=" + bin + ":/run/rootswap-init"} {
		if !strings.Contains(string(b), want+"\n") {
			t.Errorf("web.nspawn lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "hostname") {
		t.Errorf("--nspawn-opt has no file form, it goes on the ExecStart line:\n%s", b)
	}
}
