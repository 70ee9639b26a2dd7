package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/internal/sdverify"
	"github.com/rootswap/rootswap/internal/testimage"
)

// escapeArgs are payload arguments both unit formats must deliver
// unchanged. A .nspawn file cannot hold a newline (see
// TestNspawnFileRefusesNewline); the service gets one more.
var escapeArgs = []string{
	"plain", "a b", "  lead and trail  ", "tab\there", "", `"dq"`, `'sq'`, `both'"mixed"'`, `'`, `"`,
	"$X", "${X}", "a$$b", "$", "100%", "100%%", "%n", "%i", `back\slash`, `trail\`, `\\`, `\"`, `\n`,
	`\;`, ";", "a;b", "-x", "@x", "+x", "!x", ":x", "#hash", "=eq", "*?[]~&|<>`()", "ä→ünïcode",
}

// argvScript prints its arguments and two variables, each ended by NUL.
const argvScript = `printf '%s\0' "$0" "$@" "$E" "$MSG"`

// payloadArgv runs argv (a generated unit's command as systemd parsed it)
// and splits the payload's output into the arguments it printed.
func payloadArgv(t *testing.T, argv []string) []string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, errb.String())
	}
	got := strings.Split(out.String(), "\x00")
	if len(got) == 0 || got[len(got)-1] != "" {
		t.Fatalf("%q: output not NUL-terminated: %q\nstderr: %s", argv, out.String(), errb.String())
	}
	return got[:len(got)-1]
}

// parsedCommand is the unit's ExecStart= as systemd parsed it, with the
// start-time "$$" → "$" applied (the executable's path aside).
func parsedCommand(t *testing.T, unitPath string) []string {
	t.Helper()
	cmds, err := sdverify.Commands(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cmds["ExecStart"]); n != 1 {
		t.Fatalf("%s: systemd parsed %d ExecStart= commands, want 1: %q", unitPath, n, cmds["ExecStart"])
	}
	argv := cmds["ExecStart"][0]
	for i := 1; i < len(argv); i++ {
		if argv[i], err = sdverify.ExpandDollars(argv[i]); err != nil {
			t.Fatal(err)
		}
	}
	return argv
}

// dropInCommand is the command of key (ExecStartPre…) in unitPath, as
// systemd parses and expands it, whose words include word.
func dropInCommand(t *testing.T, unitPath, key, word string) []string {
	t.Helper()
	cmds, err := sdverify.Commands(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, argv := range cmds[key] {
		if !slices.Contains(argv, word) {
			continue
		}
		for i := 1; i < len(argv); i++ {
			if argv[i], err = sdverify.ExpandDollars(argv[i]); err != nil {
				t.Fatal(err)
			}
		}
		return argv
	}
	t.Fatalf("%s: no %s= command with %q among %q", unitPath, key, word, cmds[key])
	return nil
}

func needAnalyze(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skipf("systemd-analyze: %v", err)
	}
}

// TestServiceUnitDeliversArguments: rootswap-NAME.service's ExecStart=,
// parsed by systemd's unit parser and executed, runs the payload under
// nspawn with exactly the arguments, --setenv and --nspawn-opt values
// given to `rootswap unit`.
func TestServiceUnitDeliversArguments(t *testing.T) {
	needIntegration(t)
	needAnalyze(t)
	v1, _ := testimage.Images(t)
	s := newStore(t)
	const name = "esc.a-b" // a dot and a hyphen: unit names and %i keep both
	s.ok("prepare", name, v1)
	args := append(append([]string{}, escapeArgs...), "two\nlines", "\r\n", "-", "--")
	env := `E=a b $X %n "q" \`
	msg := `50% done $X "q" 'x' \`
	dir := t.TempDir()
	s.ok(append([]string{"unit", "--install", "--unit-dir", dir, "--setenv", env, "--nspawn-opt", "--setenv=MSG=" + msg,
		"--nspawn-opt=--console=pipe", name, v1, "--", "/bin/sh", "-c", argvScript, "sh"}, args...)...)
	got := payloadArgv(t, parsedCommand(t, filepath.Join(dir, "rootswap-"+name+".service")))
	want := append(append([]string{"sh"}, args...), strings.TrimPrefix(env, "E="), msg)
	if !slices.Equal(got, want) {
		t.Errorf("the payload got\n%q\nwant\n%q", got, want)
	}
}

// TestNspawnFileDeliversArguments: NAME.nspawn's Parameters= and
// Environment=, written by the drop-in's nspawn-settings and read by the
// real systemd-nspawn, and the drop-in's ExecStart=, parsed by systemd's
// unit parser, run the payload with exactly the arguments given to
// `rootswap unit --nspawn-file`.
//
// Production has the file in /run/systemd/nspawn (trusted) and the tree
// at /var/lib/machines/NAME; the test may touch neither, so it has
// nspawn-settings put the file next to a copy of the tree, where nspawn also looks, and adds
// --settings=trusted --register=no --directory=COPY to the drop-in's
// command. The parser of the file is the same.
func TestNspawnFileDeliversArguments(t *testing.T) {
	needIntegration(t)
	needAnalyze(t)
	v1, _ := testimage.Images(t)
	s := newStore(t)
	const name = "esc.a-b"
	s.ok("prepare", name, v1)
	tree, err := filepath.EvalSymlinks(filepath.Join(s.root, "machines", name, "current"))
	if err != nil {
		t.Fatal(err)
	}
	machines := t.TempDir()
	if out, err := exec.Command("cp", "-a", tree, filepath.Join(machines, name)).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	template, err := os.ReadFile("/lib/systemd/system/systemd-nspawn@.service")
	if err != nil {
		t.Skipf("no systemd-nspawn@.service to drop in to: %v", err)
	}
	env := `E=a b $X %n "q" \'`
	msg := `50% done $X "q" 'x' \`
	for _, tc := range []struct {
		what string
		opts []string
		want []string // the two variables
	}{
		{"--setenv in Environment=", []string{"--setenv", env}, []string{strings.TrimPrefix(env, "E="), ""}},
		{"--nspawn-opt in the drop-in", []string{"--nspawn-opt", "--setenv=MSG=" + msg}, []string{"", msg}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			dir := t.TempDir()
			system := filepath.Join(dir, "system")
			s.ok(append(append([]string{"unit", "--install", "--nspawn-file", "--unit-dir", system, "--nspawn-opt=--console=pipe"},
				tc.opts...), append([]string{name, v1, "--", "/bin/sh", "-c", argvScript, "sh"}, escapeArgs...)...)...)
			if err := os.WriteFile(filepath.Join(system, "systemd-nspawn@.service"), template, 0o644); err != nil {
				t.Fatal(err)
			}
			// The drop-in's nspawn-settings, as systemd parses it, writes
			// the file beside the copy (--dir) instead of /run.
			writeSettings := dropInCommand(t, filepath.Join(system, "systemd-nspawn@"+name+".service"), "ExecStartPre", "nspawn-settings")
			at := slices.Index(writeSettings, "nspawn-settings") + 1
			writeSettings = slices.Insert(writeSettings, at, "--dir="+machines)
			if out, err := exec.Command(writeSettings[0], writeSettings[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%q: %v\n%s", writeSettings, err, out)
			}
			b, err := os.ReadFile(filepath.Join(machines, name+".nspawn"))
			if err != nil {
				t.Fatal(err)
			}
			argv := parsedCommand(t, filepath.Join(system, "systemd-nspawn@"+name+".service"))
			if !slices.Contains(argv, "--machine="+name) {
				t.Errorf("drop-in ExecStart %q lacks --machine=%s", argv, name)
			}
			argv = append(argv, "--settings=trusted", "--register=no", "--directory="+filepath.Join(machines, name))
			got := payloadArgv(t, argv)
			want := append(append([]string{"sh"}, escapeArgs...), tc.want...)
			if !slices.Equal(got, want) {
				t.Errorf("%s:\n%s\nthe payload got\n%q\nwant\n%q", name+".nspawn", b, got, want)
			}
		})
	}
}

// TestNspawnFileRefusesNewline: Parameters= has no escape for a newline,
// so `unit --nspawn-file` refuses one in one line, exit 2, writing
// nothing.
func TestNspawnFileRefusesNewline(t *testing.T) {
	needIntegration(t)
	s := newStore(t)
	dir := t.TempDir()
	unit := []string{"unit", "--install", "--nspawn-file", "--unit-dir", filepath.Join(dir, "system")}
	for _, args := range [][]string{
		append(unit, "web", "img", "--", "/bin/echo", "a\nb"),
		append(unit, "--setenv", "E=a\nb", "web", "img", "--", "/bin/true"),
	} {
		s.fail(2, []string{"newline"}, args...)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused units left %d entries in the unit directory", len(ents))
	}
}
