package unit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
)

// File is one systemd unit (or .nspawn file) to print or install.
type File struct {
	name string // relative to the unit directory
	opts []*unit.UnitOption
}

// ErrInvalid marks a request no unit can be written for: an executable
// systemd would misread, a word a .nspawn file cannot hold, an nspawn
// option `rootswap run` would refuse.
var ErrInvalid = errors.New("invalid unit request")

// invalid is an error that is ErrInvalid without saying so in its text.
type invalid struct{ error }

func (invalid) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, a ...any) error { return invalid{fmt.Errorf(format, a...)} }

// GCTimerFiles are rootswap-gc.service and rootswap-gc.timer for the
// binary bin and store root, both absolute.
func GCTimerFiles(bin, root string) ([]File, error) {
	exec, err := execLine(bin, "--root", root, "gc")
	if err != nil {
		return nil, err
	}
	// No Nice= or IOSchedulingClass=idle: gc holds the store lock
	// exclusively, and a slow gc would hold up every machine's start.
	service := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", "Remove rootswap trees and objects no machine needs"),
		unit.NewUnitOption("Service", "Type", "oneshot"),
		unit.NewUnitOption("Service", "ExecStart", exec),
	}
	timer := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", "Daily rootswap garbage collection"),
		unit.NewUnitOption("Timer", "OnCalendar", "daily"),
		unit.NewUnitOption("Timer", "RandomizedDelaySec", "1h"),
		unit.NewUnitOption("Timer", "Persistent", "true"),
		unit.NewUnitOption("Install", "WantedBy", "timers.target"),
	}
	return []File{{"rootswap-gc.service", service}, {"rootswap-gc.timer", timer}}, nil
}

// DefaultUpdateCalendar is when the update timer fires unless told
// otherwise: daily, as podman-auto-update.timer does, at a random time
// within the hour after.
const DefaultUpdateCalendar = "daily"

// UpdateTimerFiles are rootswap-update.service and rootswap-update.timer
// for the binary bin and store root, both absolute: `rootswap update` of
// every machine marked with `unit --auto-update`, at onCalendar (a
// systemd.time(7) calendar event; "" is DefaultUpdateCalendar), with
// the global flags flags before the command (as a service's prepare gets
// them: the source, the registry's timeout and mirrors). The service
// fetches at the lowest CPU and I/O priority, so the services it
// updates keep theirs while it imports; the restarts it asks for are the
// units' own, at their own priority.
func UpdateTimerFiles(bin, root, onCalendar string, flags []string) ([]File, error) {
	if onCalendar == "" {
		onCalendar = DefaultUpdateCalendar
	}
	if strings.ContainsAny(onCalendar, "\n\r") || strings.TrimSpace(onCalendar) == "" {
		return nil, invalidf("unit --on-calendar %q: want one systemd.time(7) calendar event", onCalendar)
	}
	exec, err := execLine(append(append([]string{bin, "--root", root}, flags...), "update")...)
	if err != nil {
		return nil, err
	}
	service := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", "Update rootswap machines marked for auto-update"),
		unit.NewUnitOption("Unit", "Wants", "network-online.target"),
		unit.NewUnitOption("Unit", "After", "network-online.target"),
		unit.NewUnitOption("Service", "Type", "oneshot"),
		unit.NewUnitOption("Service", "ExecStart", exec),
		unit.NewUnitOption("Service", "Nice", "19"),
		unit.NewUnitOption("Service", "IOSchedulingClass", "idle"),
		unit.NewUnitOption("Service", "CPUWeight", "idle"),
		// A bound on a hung run; update's own deadlines come first.
		unit.NewUnitOption("Service", "TimeoutStartSec", "1h"),
	}
	timer := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", "Update rootswap machines marked for auto-update"),
		unit.NewUnitOption("Timer", "OnCalendar", onCalendar),
		unit.NewUnitOption("Timer", "RandomizedDelaySec", "1h"),
		unit.NewUnitOption("Timer", "Persistent", "true"),
		unit.NewUnitOption("Install", "WantedBy", "timers.target"),
	}
	return []File{{"rootswap-update.service", service}, {"rootswap-update.timer", timer}}, nil
}

// execLine quotes a command line for ExecStart= and the other Exec*=
// settings (systemd.service(5), "Command lines"): systemd expands
// specifiers in the whole line, splits it into words, unquotes them and
// decodes C escapes, and only when the command starts substitutes
// variables in every argument but the executable's path. So "%" is
// doubled everywhere, "$" in the arguments (in the path "$$" would stay
// two characters), and a word with a blank, a quote, a backslash, a ";"
// (a lone one separates commands) or a control character is
// double-quoted with \" \\ and C escapes (\n \t \xNN), so newlines and
// tabs arrive as such. The executable itself must be a path systemd
// accepts: absolute or a bare name, no leading prefix character (- @ + !
// :), no quote, backslash or control character.
func execLine(args ...string) (string, error) {
	if err := checkExecutable(args[0]); err != nil {
		return "", err
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, "%", "%%")
		if i > 0 {
			a = strings.ReplaceAll(a, "$", "$$")
		}
		if a == "" || strings.ContainsFunc(a, func(r rune) bool {
			return r <= ' ' || r == 0x7f || strings.ContainsRune("\"'\\;", r)
		}) {
			a = `"` + cQuote(a) + `"`
		}
		quoted[i] = a
	}
	return strings.Join(quoted, " "), nil
}

// cQuote escapes s for the inside of a double-quoted word of a command
// line: \\, \", and C escapes for control characters.
func cQuote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if c < ' ' || c == 0x7f {
				fmt.Fprintf(&b, `\x%02x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// checkExecutable refuses what systemd would read as prefixes or refuse
// to run ("Executable name contains special characters").
func checkExecutable(p string) error {
	switch {
	case p == "":
		return invalidf("unit: executable %q: empty", p)
	case strings.ContainsAny(p[:1], "-@+!:"):
		return invalidf("unit: executable %q: systemd would read its first character as a prefix", p)
	case strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f || strings.ContainsRune("\"'\\", r) }):
		return invalidf("unit: executable %q: systemd refuses an executable path holding a quote, a backslash or a control character; move the binary", p)
	case !filepath.IsAbs(p) && strings.Contains(p, "/"):
		return invalidf("unit: executable %q: want an absolute path or a bare name", p)
	}
	return nil
}

func serialize(f File) ([]byte, error) {
	b, err := io.ReadAll(unit.Serialize(f.opts))
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", f.name, err)
	}
	return b, nil
}

// Print writes the units one after another, each under a comment naming
// the file in dir it belongs in.
func Print(w io.Writer, dir string, files []File) error {
	for i, f := range files {
		b, err := serialize(f)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "# %s\n%s", filepath.Join(dir, f.name), b)
	}
	return nil
}

// Install writes each unit under dir, under a temporary name renamed into
// place, so systemd never reads half a file, then says on w what to run
// next. A unit that fails leaves no temporary file; those written before
// it stay.
func Install(w io.Writer, dir string, files []File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("unit dir %s: %w", dir, err)
	}
	var enable []string
	for _, f := range files {
		b, err := serialize(f)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, f.name)
		if err := writeFile(path, b); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s\n", path)
		switch {
		case strings.HasSuffix(f.name, ".timer"):
			enable = append(enable, f.name)
		case strings.HasSuffix(f.name, ".service") && !strings.HasPrefix(f.name, "rootswap-gc") && !strings.HasPrefix(f.name, "rootswap-update"):
			enable = append(enable, f.name)
		case strings.HasSuffix(f.name, ".service.d/rootswap.conf"):
			enable = append(enable, strings.TrimSuffix(f.name, ".d/rootswap.conf"))
		}
	}
	fmt.Fprintf(w, "next: systemctl daemon-reload && systemctl enable --now %s\n", strings.Join(enable, " "))
	return nil
}

// writeFile replaces path with a file holding b, under a temporary name
// renamed into place, so systemd never reads half a file; on failure it
// leaves no temporary file. Missing directories are made.
func writeFile(path string, b []byte) error {
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d", filepath.Base(path), os.Getpid()))
	err := os.MkdirAll(filepath.Dir(path), 0o755)
	if err == nil {
		err = writeSynced(tmp, b)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("unit %s: %w", path, err)
	}
	return nil
}

// writeSynced writes a world-readable file (whatever the umask: systemd
// and admins read units) and syncs it, so the rename that follows never
// publishes an empty file after a crash.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
