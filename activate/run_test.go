package activate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScanOptionsRefuses: every spelling nspawn reads as "write the tree"
// or "chown it" is refused early, wherever it stands among the options.
func TestScanOptionsRefuses(t *testing.T) {
	for _, bad := range [][]string{
		{"--volatile=no"}, {"--volatile=off"}, {"--volatile=n"}, {"--volatile=f"}, {"--volatile=false"},
		{"--volatile=0"}, {"--volatile=NO"}, {"--volatile=Off"}, {"--volatile=FALSE"},
		{"--suppress-sync", "yes", "--volatile=no"},
		{"--ambient-capability", "CAP_CHOWN", "--volatile=n"},
		{"--oci-bundle", "/b"}, {"--oci-bundle=/b"},
		{"--no-new-privileges", "yes", "--volatile=off"},
		{"--bind", "/a", "-U", "/bin/true"},
		{"-U"}, {"-qU"}, {"-bU"}, {"--private-users-chown"},
		{"--private-users-ownership=chown"}, {"--private-users-ownership", "CHOWN"}, {"--private-users-ownership=auto"},
		{"-x"}, {"--ephemeral"}, {"-qx"},
		{"-D", "/"}, {"--directory=/"}, {"-M", "x"}, {"--machine=x"}, {"--image=/x.raw"}, {"--template=/"},
		{"-qD/"}, {"--read-only", "--volatile=overlay"},
	} {
		if _, err := NspawnArgs("web", "/t", bad, false); err == nil {
			t.Errorf("%q accepted", bad)
		} else if !strings.HasPrefix(err.Error(), "run web: option ") {
			t.Errorf("%q: error %q does not name the run and the option", bad, err)
		}
	}
}

// TestScanOptionsAccepts: values, the command and its arguments are not
// options, and the result keeps the user's arguments as given.
func TestScanOptionsAccepts(t *testing.T) {
	for _, tc := range []struct {
		user []string
		want string
	}{
		{[]string{"--bind=/a:/b", "-E", "X=1", "/bin/sh", "-c", "-U"},
			"--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM --bind=/a:/b -E X=1 /bin/sh -c -U"},
		// -E takes the rest of the cluster, or the next argument, as its value.
		{[]string{"-EUSER=x", "/bin/true"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM -EUSER=x /bin/true"},
		{[]string{"-qE", "--volatile=no", "/bin/true"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM -qE --volatile=no /bin/true"},
		// A valued option's value is never read as an option.
		{[]string{"--setenv", "-U", "/bin/true"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM --setenv -U /bin/true"},
		// --volatile's value is optional: "--volatile no" is --volatile=yes and the command "no".
		{[]string{"--volatile", "no"}, "--machine web --directory /t --register=no --keep-unit --kill-signal=SIGTERM --volatile no"},
		{[]string{"--volatile=state", "/bin/true"}, "--machine web --directory /t --register=no --keep-unit --kill-signal=SIGTERM --volatile=state /bin/true"},
		// --read-only means read-only: no overlay.
		{[]string{"--read-only", "/bin/true"}, "--machine web --directory /t --register=no --keep-unit --kill-signal=SIGTERM --read-only /bin/true"},
		{[]string{"--read-only", "--volatile=state"}, "--machine web --directory /t --register=no --keep-unit --kill-signal=SIGTERM --read-only --volatile=state"},
		// A user namespace gets ID-mapped ownership, unless the user chose one.
		{[]string{"--private-users=pick"}, "--machine web --directory /t --volatile=overlay --private-users-ownership=map --register=no --keep-unit --kill-signal=SIGTERM --private-users=pick"},
		{[]string{"--private-users"}, "--machine web --directory /t --volatile=overlay --private-users-ownership=map --register=no --keep-unit --kill-signal=SIGTERM --private-users"},
		{[]string{"--private-users=65536:65536"}, "--machine web --directory /t --volatile=overlay --private-users-ownership=map --register=no --keep-unit --kill-signal=SIGTERM --private-users=65536:65536"},
		{[]string{"--private-users=pick", "--private-users-ownership=off"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM --private-users=pick --private-users-ownership=off"},
		{[]string{"--private-users=no"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM --private-users=no"},
		{[]string{"--private-users=Off"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM --private-users=Off"},
		{[]string{"--", "-x"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM -- -x"},
		// A stop gives PID 1 SIGTERM, unless the user said what it gets:
		// --kill-signal, or -b (nspawn's SIGRTMIN+3 for a booted init).
		{[]string{"--kill-signal=SIGINT"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGINT"},
		{[]string{"--kill-signal", "SIGINT", "/bin/true"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal SIGINT /bin/true"},
		{[]string{"-b"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit -b"},
		{[]string{"-qb"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit -qb"},
		{[]string{"--boot"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --boot"},
		{[]string{"/bin/sh", "-b"}, "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM /bin/sh -b"},
	} {
		args, err := NspawnArgs("web", "/t", tc.user, false)
		if err != nil {
			t.Errorf("%q: %v", tc.user, err)
			continue
		}
		if got := strings.Join(args, " "); got != tc.want {
			t.Errorf("%q:\ngot  %s\nwant %s", tc.user, got, tc.want)
		}
	}
	args, _ := NspawnArgs("web", "/t", []string{"/bin/true"}, true)
	if got := strings.Join(args, " "); got != "--machine web --directory /t --volatile=overlay --kill-signal=SIGTERM /bin/true" {
		t.Errorf("registered: %s", got)
	}
}

// TestSkipOptionCheck: the test-only switch passes refused options on.
func TestSkipOptionCheck(t *testing.T) {
	t.Setenv(SkipOptionCheckEnv, "1")
	args, err := NspawnArgs("web", "/t", []string{"--volatile=off", "-U"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(args, " "); got != "--machine web --directory /t --register=no --keep-unit --kill-signal=SIGTERM --volatile=off -U" {
		t.Errorf("got %s", got)
	}
}

// TestCheckMountPoints: a read-only root must hold every mount point, and
// the error names each missing one in one line.
func TestCheckMountPoints(t *testing.T) {
	tree := t.TempDir()
	for _, d := range []string{"dev", "proc", "sys", "tmp", "etc", "srv"} {
		os.Mkdir(filepath.Join(tree, d), 0o755)
	}
	os.Symlink("srv", filepath.Join(tree, "data"))
	check := func(user ...string) error {
		_, o, err := nspawnArgs("web", tree, user, false)
		if err != nil {
			t.Fatal(err)
		}
		return checkMountPoints("web", tree, o, nil)
	}
	// The overlay (and --volatile=yes's tmpfs) let nspawn make mount points.
	if err := check("--bind=/x:/nowhere"); err != nil {
		t.Errorf("overlay: %v", err)
	}
	if err := check("--volatile=yes", "--bind=/x:/nowhere"); err != nil {
		t.Errorf("--volatile=yes: %v", err)
	}
	err := check("--read-only", "--bind=/x:/nowhere", "--bind-ro=/etc", "--tmpfs=/scratch:mode=755", "--overlay=/a:/b:/ov", "--bind=/y:/data", "--bind=/z:/escaped\\:x")
	if err == nil {
		t.Fatal("--read-only with missing mount points accepted")
	}
	for _, want := range []string{"run web:", "/run,", "/nowhere (for --bind=/x:/nowhere)", "/scratch (for --tmpfs", "/ov (for --overlay", "--read-only"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	for _, not := range []string{"/etc", "/data", "escaped"} {
		if strings.Contains(err.Error(), not) {
			t.Errorf("error %q names %s, which exists or cannot be judged", err, not)
		}
	}
	os.Mkdir(filepath.Join(tree, "run"), 0o755)
	if err := check("--read-only", "/bin/true"); err != nil {
		t.Errorf("complete tree: %v", err)
	}
	if err := check("--volatile=state"); err == nil || !strings.Contains(err.Error(), "/var (for --volatile=state)") {
		t.Errorf("--volatile=state without /var: %v", err)
	}
}

func TestNspawnBinary(t *testing.T) {
	t.Setenv("ROOTSWAP_NSPAWN", "/nonexistent/nspawn")
	if _, err := Nspawn(); err == nil || !strings.Contains(err.Error(), "/nonexistent/nspawn (from ROOTSWAP_NSPAWN)") {
		t.Errorf("missing binary: %v", err)
	}
	t.Setenv("ROOTSWAP_NSPAWN", t.TempDir())
	if _, err := Nspawn(); err == nil || !strings.Contains(err.Error(), "not an executable file") {
		t.Errorf("directory: %v", err)
	}
}

// TestCheckSources: no bind or overlay may bring the store, a path in it
// or a directory above it into the container.
func TestCheckSources(t *testing.T) {
	base := t.TempDir()
	store := filepath.Join(base, "store")
	os.MkdirAll(filepath.Join(store, "objects"), 0o755)
	os.Symlink(store, filepath.Join(base, "alias"))
	for _, bad := range [][]string{
		{"--bind=" + store + ":/s"}, {"--bind", store + "/objects:/o"}, {"--bind-ro=" + base + ":/b"},
		{"--bind=/:/host"}, {"--bind=" + base + "/alias/objects:/o"}, {"--bind=" + store + "/objects"},
		{"--overlay=" + store + "/objects:/tmp/u:/ov"}, {"--overlay-ro=/etc:" + store + ":/ov"},
	} {
		_, o, _ := nspawnArgs("web", "/t", bad, false)
		if err := checkSources("web", store, o); err == nil || !strings.Contains(err.Error(), "would bind the store") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	for _, ok := range [][]string{
		{"--bind=/srv:/srv"}, {"--bind=+/etc:/x"}, {"--bind-ro=" + base + "/storex:/x"}, {"--tmpfs=" + store},
		{"--overlay=/etc:/tmp/u:" + store},
	} {
		_, o, _ := nspawnArgs("web", "/t", ok, false)
		if err := checkSources("web", store, o); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
}
