package unit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/rootswap/rootswap/activate"
)

// readUnit parses an installed unit back into section → name → values.
func readUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.Deserialize(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]map[string][]string{}
	for _, o := range opts {
		if out[o.Section] == nil {
			out[o.Section] = map[string][]string{}
		}
		out[o.Section][o.Name] = append(out[o.Section][o.Name], o.Value)
	}
	return out
}

// install writes files to dir and returns what Install said.
func install(t *testing.T, dir string, files []File, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := Install(&out, dir, files); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestUnitGCTimer(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	dir := filepath.Join(t.TempDir(), "units")
	bin, _ := os.Executable()
	files, err := GCTimerFiles(bin, store)
	out := install(t, dir, files, err)
	want := "wrote " + dir + "/rootswap-gc.service\nwrote " + dir + "/rootswap-gc.timer\n" +
		"next: systemctl daemon-reload && systemctl enable --now rootswap-gc.timer\n"
	if out != want {
		t.Errorf("install said:\n%s\nwant:\n%s", out, want)
	}
	svc := readUnit(t, filepath.Join(dir, "rootswap-gc.service"))
	if got := svc["Service"]["ExecStart"]; len(got) != 1 || got[0] != bin+" --root "+store+" gc" {
		t.Errorf("ExecStart %q, want %q", got, bin+" --root "+store+" gc")
	}
	if got := svc["Service"]["Type"]; len(got) != 1 || got[0] != "oneshot" {
		t.Errorf("Type %q, want oneshot", got)
	}
	timer := readUnit(t, filepath.Join(dir, "rootswap-gc.timer"))
	for name, want := range map[string]string{"OnCalendar": "daily", "RandomizedDelaySec": "1h", "Persistent": "true"} {
		if got := timer["Timer"][name]; len(got) != 1 || got[0] != want {
			t.Errorf("timer %s = %q, want %q", name, got, want)
		}
	}
	if got := timer["Install"]["WantedBy"]; len(got) != 1 || got[0] != "timers.target" {
		t.Errorf("timer WantedBy %q", got)
	}
	for _, name := range []string{"rootswap-gc.service", "rootswap-gc.timer"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, %v; want 0644", name, fi.Mode(), err)
		}
	}
	verifyUnits(t, dir)

	// Printing gives the same units, each under a comment naming its file.
	var b strings.Builder
	if err := Print(&b, dir, files); err != nil {
		t.Fatal(err)
	}
	printed := b.String()
	for _, name := range []string{"rootswap-gc.service", "rootswap-gc.timer"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if !strings.Contains(printed, "# "+filepath.Join(dir, name)+"\n"+string(b)) {
			t.Errorf("printed units lack %s as installed:\n%s", name, printed)
		}
	}
}

// TestUnitQuoting installs units for a binary and store whose paths need
// quoting and escaping, and lets systemd read them back.
func TestUnitQuoting(t *testing.T) {
	base := t.TempDir()
	bin := filepath.Join(base, "my bin 100%", "root$swap")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	self, _ := os.Executable()
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(base, `100% "$store"`)
	files, err := GCTimerFiles(bin, store)
	dir := filepath.Join(base, "units")
	install(t, dir, files, err)
	got := readUnit(t, filepath.Join(dir, "rootswap-gc.service"))["Service"]["ExecStart"]
	want := `"` + filepath.Join(base, "my bin 100%%", "root$swap") + `" --root "` + filepath.Join(base, `100%% \"$$store\"`) + `" gc`
	if len(got) != 1 || got[0] != want {
		t.Errorf("ExecStart\n got %q\nwant %q", got, want)
	}
	verifyUnits(t, dir)

	// A newline cannot stand in a unit line; it goes in as \n, which
	// systemd decodes (TestExecLineSystemdParses runs systemd's parser).
	files, err = GCTimerFiles(bin, "/a\nb")
	if err != nil {
		t.Fatal(err)
	}
	if got := files[0].opts[2].Value; !strings.HasSuffix(got, ` --root "/a\nb" gc`) {
		t.Errorf("ExecStart %q, want the newline as \\n in quotes", got)
	}
}

// verifyUnits runs systemd-analyze verify on the units names in dir (the gc
// timer's when none are named), which it reads offline (no
// systemd as PID 1 needed) and checks the ExecStart binary exists. It
// prints warnings without failing, so any output is a failure.
func verifyUnits(t *testing.T, dir string, names ...string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze verify skipped: %v", err)
		return
	}
	if len(names) == 0 {
		names = []string{"rootswap-gc.timer", "rootswap-gc.service"}
	}
	args := []string{"verify"}
	for _, n := range names {
		args = append(args, filepath.Join(dir, n))
	}
	cmd := exec.Command(sa, args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=warning")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestUnitService(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	dir := filepath.Join(t.TempDir(), "units")
	bin, _ := os.Executable()
	files, err := ServiceFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Daemon: true, Command: []string{"/bin/sh", "-c", "echo 100% $HOME"},
		Nspawn:     activate.NspawnOptions{Binds: []string{"/srv/a:/data"}, Env: []string{"X=1 2"}, NotifyReady: true, PrivateUsers: true},
		RestartSec: 5 * time.Second, HealthyAfter: 45 * time.Second})
	out := install(t, dir, files, err)
	if !strings.Contains(out, "next: systemctl daemon-reload && systemctl enable --now rootswap-web.service") {
		t.Errorf("install said %q", out)
	}
	u := readUnit(t, filepath.Join(dir, "rootswap-web.service"))
	want := map[string]map[string]string{
		"Unit": {"Wants": "docker.service", "After": "docker.service"},
		"Service": {
			"Type":         "notify",
			"ExecStartPre": bin + " --root " + store + " prepare --pull web reg/web:1",
			"ExecStart": bin + " --root " + store + ` run web --keep-unit --bind=/srv/a:/data "--setenv=X=1 2" ` +
				`--private-users=pick --private-users-ownership=map --notify-ready=yes -- /bin/sh -c "echo 100%% $$HOME"`,
			"ExecStopPost": bin + " --root " + store + " report web",
			"Restart":      "always",
			"KillMode":     "mixed",
			"Delegate":     "yes",
			// run forks nspawn, which relays READY=1: not the main PID.
			"NotifyAccess":   "all",
			"TimeoutStopSec": "25s",
		},
		"Install": {"WantedBy": "multi-user.target"},
	}
	for sec, opts := range want {
		for k, v := range opts {
			if got := u[sec][k]; len(got) != 1 || got[0] != v {
				t.Errorf("[%s] %s = %q, want %q", sec, k, got, v)
			}
		}
	}
	if got := strings.Join(u["Service"]["Environment"], " "); got != "ROOTSWAP_HEALTHY_AFTER=45s ROOTSWAP_STOP_TIMEOUT=10s" {
		t.Errorf("[Service] Environment = %q", got)
	}
	if _, ok := u["Unit"]["Requires"]; ok {
		t.Error("the unit Requires= docker: it could not start from cache with Docker down")
	}
	if strings.Contains(u["Service"]["ExecStart"][0], " -U") {
		t.Error("the unit passes -U")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze verify skipped: %v", err)
		return
	}
	cmd := exec.Command(sa, "verify", filepath.Join(dir, "rootswap-web.service"))
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=warning")
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitNspawnFile: with a COMMAND the drop-in goes the way it goes
// without one: nspawn-settings at each start, given the COMMAND after
// "--", merges it with the image's config as run does; no static
// NAME.nspawn is written, so the service and the file cannot disagree.
func TestUnitNspawnFile(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	base := t.TempDir()
	dir := filepath.Join(base, "system")
	bin, _ := os.Executable()
	files, err := NspawnFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Command: []string{"/app", "--serve"},
		Nspawn: activate.NspawnOptions{BindsRO: []string{"/etc/ssl"}, ReadOnly: true}, RestartSec: 5 * time.Second})
	install(t, dir, files, err)
	if _, err := os.Stat(filepath.Join(base, "nspawn", "web.nspawn")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("with a command a static web.nspawn is written: %v", err)
	}
	d := readUnit(t, filepath.Join(dir, "systemd-nspawn@web.service.d", "rootswap.conf"))
	want := bin + " --root " + store + " nspawn-settings --bind-ro=/etc/ssl --read-only web -- /app --serve"
	if got := d["Service"]["ExecStartPre"]; len(got) != 3 || !strings.Contains(got[0], "prepare --pull --link-machines web reg/web:1") ||
		got[1] != want || !strings.HasSuffix(got[2], " report --start web") {
		t.Errorf("drop-in ExecStartPre:\n%s\nwant prepare, then\n%s\nthen report --start", strings.Join(got, "\n"), want)
	}
	// -b without a command: the same way (the tree's init boots).
	files, err = NspawnFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Nspawn: activate.NspawnOptions{Extra: []string{"-b"}}})
	install(t, dir, files, err)
	if got := readUnit(t, filepath.Join(dir, "systemd-nspawn@web.service.d", "rootswap.conf"))["Service"]["ExecStartPre"]; len(got) != 3 ||
		!strings.HasSuffix(got[1], " nspawn-settings --nspawn-opt=-b web") {
		t.Errorf("--nspawn-file -b: drop-in ExecStartPre %q", got)
	}
	// --no-init and a command that looks like an option: the service says
	// them to run, the drop-in to nspawn-settings.
	svc, err := ServiceFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Command: []string{"/app"}, NoInit: true})
	if err != nil || !strings.Contains(fmt.Sprint(svc[0].opts), " run --no-init web --keep-unit ") {
		t.Errorf("--no-init: service %v, %v", err, svc)
	}
	files, err = NspawnFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Command: []string{"-x", "--"}, NoInit: true, RestartSec: time.Second})
	install(t, dir, files, err)
	d = readUnit(t, filepath.Join(dir, "systemd-nspawn@web.service.d", "rootswap.conf"))
	if got := d["Service"]["ExecStartPre"]; len(got) != 3 || !strings.HasSuffix(got[1], " nspawn-settings --no-init web -- -x --") {
		t.Errorf("--no-init -- -x --: drop-in ExecStartPre %q", got)
	}
	if got := d["Service"]["ExecStart"]; len(got) != 2 || got[0] != "" || strings.Contains(got[1], "-U") || !strings.Contains(got[1], "--settings=override") {
		t.Errorf("drop-in ExecStart %q: must reset the template's and never pass -U", got)
	}
	// nspawn is the main process: report asks systemd about the unit's jobs.
	if got := d["Service"]["ExecStopPost"]; len(got) != 1 || !strings.HasSuffix(got[0], " report --unit systemd-nspawn@web.service web") {
		t.Errorf("drop-in ExecStopPost %q", got)
	}
	if got := d["Service"]["TimeoutStopSec"]; len(got) != 1 || got[0] != "10s" {
		t.Errorf("drop-in TimeoutStopSec %q, want the default 10s", got)
	}
	files, err = NspawnFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", StopTimeout: 5 * time.Second, Command: []string{"/app"},
		Nspawn: activate.NspawnOptions{Extra: []string{"--kill-signal=SIGINT"}}, RestartSec: 5 * time.Second})
	install(t, dir, files, err)
	if got := readUnit(t, filepath.Join(dir, "systemd-nspawn@web.service.d", "rootswap.conf"))["Service"]["TimeoutStopSec"]; len(got) != 1 || got[0] != "5s" {
		t.Errorf("--stop-timeout 5s: drop-in TimeoutStopSec %q", got)
	}
	// A word a .nspawn file cannot hold is refused when the unit is
	// written, not at its first start.
	if _, err := NspawnFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Command: []string{"/app", "a\nb"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a newline in the command: %v, want ErrInvalid", err)
	}
	if _, err := NspawnFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Nspawn: activate.NspawnOptions{Env: []string{"E=a\nb"}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a newline in --setenv: %v, want ErrInvalid", err)
	}
}

// A unit for a registry (or archive) image waits for the network, not for
// Docker: a node with no Docker must not pull docker.service in.
func TestUnitSourceDeps(t *testing.T) {
	bin, _ := os.Executable()
	for _, daemon := range []bool{true, false} {
		sp := Spec{Name: "web", Image: "docker://reg.example/web:1", Daemon: daemon, Command: []string{"/app"}}
		svc, err := ServiceFiles(bin, "/var/lib/rootswap", sp)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := NspawnFiles(bin, "/var/lib/rootswap", sp)
		if err != nil {
			t.Fatal(err)
		}
		want, not := "network-online.target", "docker.service"
		if daemon {
			want, not = not, want
		}
		for _, f := range []File{svc[0], ns[0]} {
			var wants, after []string
			for _, o := range f.opts {
				switch {
				case o.Section == "Unit" && o.Name == "Wants":
					wants = append(wants, o.Value)
				case o.Section == "Unit" && o.Name == "After":
					after = append(after, o.Value)
				case strings.Contains(o.Value, not):
					t.Errorf("daemon=%v: %s: %s=%s", daemon, f.name, o.Name, o.Value)
				}
			}
			if !slices.Equal(wants, []string{want}) || !slices.Equal(after, []string{want}) {
				t.Errorf("daemon=%v: %s: Wants=%q After=%q, want %s", daemon, f.name, wants, after, want)
			}
		}
	}
}

// TestUnitUpdateTimer: rootswap-update.service runs update on this store
// at the lowest CPU and I/O priority; the timer fires daily (or at
// --on-calendar) with a random delay; Install enables only the timer;
// systemd-analyze reads both.
func TestUnitUpdateTimer(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	dir := filepath.Join(t.TempDir(), "units")
	bin, _ := os.Executable()
	files, err := UpdateTimerFiles(bin, store, "", nil)
	out := install(t, dir, files, err)
	want := "wrote " + dir + "/rootswap-update.service\nwrote " + dir + "/rootswap-update.timer\n" +
		"next: systemctl daemon-reload && systemctl enable --now rootswap-update.timer\n"
	if out != want {
		t.Errorf("install said:\n%s\nwant:\n%s", out, want)
	}
	svc := readUnit(t, filepath.Join(dir, "rootswap-update.service"))
	for name, want := range map[string]string{"ExecStart": bin + " --root " + store + " update", "Type": "oneshot",
		"Nice": "19", "IOSchedulingClass": "idle", "CPUWeight": "idle"} {
		if got := svc["Service"][name]; len(got) != 1 || got[0] != want {
			t.Errorf("service %s = %q, want %q", name, got, want)
		}
	}
	timer := readUnit(t, filepath.Join(dir, "rootswap-update.timer"))
	for name, want := range map[string]string{"OnCalendar": "daily", "RandomizedDelaySec": "1h", "Persistent": "true"} {
		if got := timer["Timer"][name]; len(got) != 1 || got[0] != want {
			t.Errorf("timer %s = %q, want %q", name, got, want)
		}
	}
	verifyUnits(t, dir, "rootswap-update.timer", "rootswap-update.service")
	files, err = UpdateTimerFiles(bin, store, "Mon *-*-* 03:00", []string{"--source=registry"})
	if err != nil || files[1].opts[1].Value != "Mon *-*-* 03:00" || files[0].opts[4].Value != bin+" --root "+store+" --source=registry update" {
		t.Errorf("--on-calendar: %v %v", files, err)
	}
	if _, err := UpdateTimerFiles(bin, store, "daily\nExecStart=/bin/evil", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("a calendar with a newline: %v", err)
	}
}

// TestUnitNspawnFileFollowsImage: without a command the unit writes no
// .nspawn file (one in /etc/systemd/nspawn would freeze today's image's
// entrypoint); the drop-in's ExecStartPre writes it at each start, after
// prepare and before the start is recorded, with the unit's choices as
// nspawn-settings flags; WriteSettings writes what it is given, quoted,
// and refuses to be shadowed.
func TestUnitNspawnFileFollowsImage(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	base := t.TempDir()
	dir := filepath.Join(base, "system")
	bin, _ := os.Executable()
	ep := "/ep"
	files, err := NspawnFiles(bin, store, Spec{Name: "web", Image: "reg/web:1", Entrypoint: &ep, NoInit: true,
		Nspawn: activate.NspawnOptions{Binds: []string{"/srv:/data"}, BindsRO: []string{"/etc/ssl"}, Env: []string{"A=1 2"},
			ReadOnly: true, PrivateUsers: true, NotifyReady: true, Extra: []string{"--hostname=h"}}, RestartSec: time.Second})
	install(t, dir, files, err)
	if _, err := os.Stat(filepath.Join(base, "nspawn", "web.nspawn")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("without a command a static web.nspawn is written: %v", err)
	}
	d := readUnit(t, filepath.Join(dir, "systemd-nspawn@web.service.d", "rootswap.conf"))
	pre := d["Service"]["ExecStartPre"]
	want := bin + " --root " + store + ` nspawn-settings --bind=/srv:/data --bind-ro=/etc/ssl "--setenv=A=1 2" --nspawn-opt=--hostname=h --read-only --private-users --notify --no-init --entrypoint=/ep web`
	if len(pre) != 3 || !strings.Contains(pre[0], " prepare --pull --link-machines web reg/web:1") || pre[1] != want || !strings.HasSuffix(pre[2], " report --start web") {
		t.Errorf("drop-in ExecStartPre:\n%s\nwant prepare, then\n%s\nthen report --start", strings.Join(pre, "\n"), want)
	}

	run := filepath.Join(base, "run")
	st := []activate.NspawnSetting{{Section: "Exec", Key: "Environment", Value: "B=it's", Word: true}, {Section: "Exec", Key: "WorkingDirectory", Value: "/w"}}
	path, err := WriteSettings(run, "web", st, []string{"/run/rootswap-init", "container-init", "--", "/ep", "a b"})
	if err != nil {
		t.Fatal(err)
	}
	n := readUnit(t, path)
	for k, v := range map[string]string{"Exec/Boot": "no", "Exec/Parameters": `/run/rootswap-init container-init -- /ep 'a b'`,
		"Exec/Environment": `'B=it'"'"'s'`, "Exec/WorkingDirectory": "/w"} {
		sec, name, _ := strings.Cut(k, "/")
		if got := n[sec][name]; strings.Join(got, "\x00") != v {
			t.Errorf("web.nspawn [%s] %s = %q, want %q", sec, name, got, v)
		}
	}
	// Boot=yes from the settings (-b) replaces the Boot=no of a file
	// that gives a command.
	boot, err := WriteSettings(filepath.Join(base, "boot"), "web", []activate.NspawnSetting{{Section: "Exec", Key: "Boot", Value: "yes"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readUnit(t, boot)["Exec"]["Boot"]; len(got) != 1 || got[0] != "yes" {
		t.Errorf("with -b: web.nspawn Boot= %q, want yes alone", got)
	}
	if ents, _ := os.ReadDir(run); len(ents) != 1 {
		t.Errorf("%s holds %d entries, want web.nspawn alone", run, len(ents))
	}
	if _, err := WriteSettings(run, "web", []activate.NspawnSetting{{Section: "Exec", Key: "Environment", Value: "A=\n", Word: true}}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("a newline in the settings: %v, want ErrInvalid", err)
	}
	if n := readUnit(t, path); n["Exec"]["WorkingDirectory"] == nil {
		t.Errorf("a refused write replaced the file: %v", n)
	}
	// A static file in the directory nspawn reads first shadows it.
	etc := filepath.Join(base, "nspawn")
	os.MkdirAll(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "web.nspawn"), nil, 0o644)
	if _, err := writeSettings(run, etc, "web", nil, []string{"/x"}); err == nil || !strings.Contains(err.Error(), "would read it instead") {
		t.Errorf("with %s/web.nspawn: %v, want a refusal", etc, err)
	}
	if n := readUnit(t, path); n["Exec"]["WorkingDirectory"] == nil {
		t.Errorf("a shadowed write replaced the file: %v", n)
	}
}
