package unit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/internal/sdverify"
)

// hostileArgs are arguments every output format must deliver unchanged:
// quotes of both kinds, variables, specifiers, backslashes, blanks, empty
// strings, unit-file prefixes and separators, comment characters.
var hostileArgs = []string{
	"plain", "a b", "  lead and trail  ", "tab\there", "", `"dq"`, `'sq'`, `both'"mixed"'`,
	"$X", "${X}", "a$$b", "$", "$$", "100%", "%n", "%%", "%i%I%h",
	`back\slash`, `trail\`, `\\`, `\"`, `\n`, `\x41`, `\;`, ";", "a;b", "; x",
	"-x", "@x", "+x", "!x", "!!x", ":x", "#hash", "=eq", "*?[]~&|<>`()",
	"ä→ünïcode", "\x01ctl\x7f",
}

// needAnalyze skips a test where systemd-analyze cannot dump units.
func needAnalyze(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skipf("systemd-analyze: %v", err)
	}
}

// parsedExec writes a oneshot service with one ExecStart= per line and
// returns the commands systemd parsed from them.
func parsedExec(t *testing.T, lines []string) [][]string {
	t.Helper()
	dir := t.TempDir()
	opts := []*unit.UnitOption{unit.NewUnitOption("Service", "Type", "oneshot")}
	for _, l := range lines {
		opts = append(opts, unit.NewUnitOption("Service", "ExecStart", l))
	}
	if err := Install(&strings.Builder{}, dir, []File{{"escape-test.service", opts}}); err != nil {
		t.Fatal(err)
	}
	cmds, err := sdverify.Commands(filepath.Join(dir, "escape-test.service"))
	if err != nil {
		t.Fatal(err)
	}
	return cmds["ExecStart"]
}

// expanded is argv after systemd's start-time "$$" → "$", argv[0] aside
// (rootswap never doubles "$" in the executable's path).
func expanded(t *testing.T, argv []string) []string {
	t.Helper()
	out := []string{argv[0]}
	for _, a := range argv[1:] {
		e, err := sdverify.ExpandDollars(a)
		if err != nil {
			t.Error(err)
		}
		out = append(out, e)
	}
	return out
}

// TestExecLineSystemdParses feeds execLine's output to systemd's own
// unit parser and compares the argv it parsed with the one intended: one
// command per line (no ";" split), no specifier or variable expanded.
func TestExecLineSystemdParses(t *testing.T) {
	needAnalyze(t)
	dir := t.TempDir()
	odd := filepath.Join(dir, `my bin 100% $X -@+!;`, "rootswap")
	if err := os.MkdirAll(filepath.Dir(odd), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/bin/true", odd); err != nil {
		t.Fatal(err)
	}
	cases := [][]string{{"/bin/true"}, {odd, "x"}}
	for _, a := range hostileArgs {
		cases = append(cases, []string{"/bin/true", a})
	}
	cases = append(cases,
		append([]string{"/bin/true"}, hostileArgs...),
		[]string{"/bin/true", "two\nlines", "cr\rlf", "\n", "tab\tand\nnewline ", "$\n%"},
	)
	var lines []string
	for _, c := range cases {
		l, err := execLine(c...)
		if err != nil {
			t.Fatalf("execLine %q: %v", c, err)
		}
		lines = append(lines, l)
	}
	got := parsedExec(t, lines)
	if len(got) != len(cases) {
		t.Fatalf("systemd parsed %d commands from %d lines:\n%q", len(got), len(cases), got)
	}
	for i, c := range cases {
		if g := expanded(t, got[i]); !slices.Equal(g, c) {
			t.Errorf("ExecStart=%s\n systemd runs %q\n      want %q", lines[i], g, c)
		}
	}
}

// TestExecLineRefusesExecutable: systemd reads a leading - @ + ! : of the
// first word as a prefix, and refuses to load a unit whose executable
// path holds a quote, a backslash or a control character ("Executable
// name contains special characters"), quoted or not.
func TestExecLineRefusesExecutable(t *testing.T) {
	for _, bin := range []string{"-/bin/true", "@/bin/true", "+/bin/true", "!/bin/true", ":/bin/true", "",
		"bin/true", `/a"b`, "/a'b", `/a\b`, "/a\nb", "/a\tb", "/a\x7fb"} {
		l, err := execLine(bin, "x")
		if err == nil {
			t.Errorf("execLine(%q) = %q, want an error", bin, l)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", bin)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("execLine(%q): error %q does not name the path in one line", bin, err)
		}
	}
}

// TestUnitsSystemdParses: the service's and the drop-in's commands, as
// systemd parses them, carry every argument, --setenv and --nspawn-opt
// value unchanged, for a machine name with a dot and a hyphen (kept as
// they are in the unit names, which need no systemd-escape).
func TestUnitsSystemdParses(t *testing.T) {
	needAnalyze(t)
	store := filepath.Join(t.TempDir(), "store 100% $S")
	bin, _ := os.Executable()
	const name = "a.b-c"
	opt, env := `--setenv=MSG=50% done $X "q" \`, `E=a b%n${X}'`
	command := append([]string{"/bin/sh", "-c", `echo "$@" 100%`}, hostileArgs...)

	dir := t.TempDir()
	files, err := ServiceFiles(bin, store, Spec{Name: name, Image: "img", Command: command,
		Nspawn: activate.NspawnOptions{Env: []string{env}, Extra: []string{opt}}})
	install(t, dir, files, err)
	cmds, err := sdverify.Commands(filepath.Join(dir, "rootswap-"+name+".service"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"ExecStartPre": {bin, "--root", store, "prepare", "--pull", name, "img"},
		"ExecStart":    append([]string{bin, "--root", store, "run", name, "--keep-unit", "--setenv=" + env, opt, "--"}, command...),
		"ExecStopPost": {bin, "--root", store, "report", name},
	}
	for k, w := range want {
		if len(cmds[k]) != 1 {
			t.Errorf("%s: systemd parsed %q, want one command", k, cmds[k])
		} else if got := expanded(t, cmds[k][0]); !slices.Equal(got, w) {
			t.Errorf("%s: systemd runs\n%q\nwant\n%q", k, got, w)
		}
	}

	// The drop-in, on the template it drops into.
	dir = filepath.Join(t.TempDir(), "system")
	files, err = NspawnFiles(bin, store, Spec{Name: name, Image: "img", Command: command,
		Nspawn: activate.NspawnOptions{Extra: []string{opt, "--hostname=x"}}})
	install(t, dir, files, err)
	tmpl, err := os.ReadFile("/lib/systemd/system/systemd-nspawn@.service")
	if err != nil {
		t.Skipf("no systemd-nspawn@.service to drop in to: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "systemd-nspawn@.service"), tmpl, 0o644); err != nil {
		t.Fatal(err)
	}
	cmds, err = sdverify.Commands(filepath.Join(dir, "systemd-nspawn@"+name+".service"))
	if err != nil {
		t.Fatal(err)
	}
	wantAll := map[string][][]string{
		"ExecStartPre": {{bin, "--root", store, "prepare", "--pull", "--link-machines", name, "img"},
			append([]string{bin, "--root", store, "nspawn-settings", "--nspawn-opt=" + opt, "--nspawn-opt=--hostname=x", name, "--"}, command...),
			{bin, "--root", store, "report", "--start", name}},
		"ExecStart":    {{"systemd-nspawn", "--quiet", "--keep-unit", "--link-journal=try-guest", "--settings=override", "--machine=" + name, opt, "--hostname=x"}},
		"ExecStopPost": {{bin, "--root", store, "report", "--unit", "systemd-nspawn@" + name + ".service", name}},
	}
	for k, ws := range wantAll {
		if len(cmds[k]) != len(ws) {
			t.Errorf("drop-in %s: systemd parsed %q, want %d command(s)", k, cmds[k], len(ws))
			continue
		}
		for i, w := range ws {
			if got := expanded(t, cmds[k][i]); !slices.Equal(got, w) {
				t.Errorf("drop-in %s #%d: systemd runs\n%q\nwant\n%q", k, i+1, got, w)
			}
		}
	}
}

// TestSettingsWords pins the .nspawn quoting; the real systemd-nspawn
// reads it in integration/unit_escape_test.go.
func TestSettingsWords(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"/app", "--serve"}, "/app --serve"},
		{[]string{"100%", "a$$b", "${X}"}, "100% a$$b ${X}"},
		{[]string{"", "a b", "tab\tx"}, "'' 'a b' 'tab\tx'"},
		{[]string{`say "hi"`, `back\slash`, `trail\`}, `'say "hi"' 'back\slash' 'trail\'`},
		{[]string{"it's", "'", "''x'"}, `'it'"'"'s' "'" "''"'x'"'"`},
	} {
		got, err := settingsWords(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("settingsWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, w := range []string{"a\nb", "\r", "nul\x00"} {
		if got, err := settingsWords([]string{"/app", w}); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("settingsWords(%q) = %q, %v; want a one-line error", w, got, err)
		}
	}
}
