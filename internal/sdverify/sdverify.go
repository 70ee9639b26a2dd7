// Package sdverify reads units back through systemd's own parser, for
// tests: `systemd-analyze verify` loads the units as the manager would
// (no systemd as PID 1 needed) and, at debug log level, dumps each unit
// with the argv it parsed from every Exec*= line, after specifier
// expansion, quote removal and C unescaping. Environment variables are
// substituted only when a command starts, so the dump still holds "$$";
// ExpandDollars applies that last step.
package sdverify

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Commands runs systemd-analyze verify on the unit file path (drop-ins in
// path's directory are found as systemd finds them) and returns, for the
// unit named like path, each Exec*= setting's commands as argv lists.
// With no unit file at path, the unit is instantiated from a template in
// the same directory.
func Commands(path string) (map[string][][]string, error) {
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug", "SYSTEMD_LOG_COLOR=0")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("systemd-analyze verify %s: %w\n%s", path, err, lastLines(errb.String(), 20))
	}
	// Warnings (bad syntax, ignored lines) go to stderr with the unit's
	// file name; systemd-analyze still exits 0 for most of them.
	for _, l := range strings.Split(errb.String(), "\n") {
		if strings.Contains(l, filepath.Base(path)) && (strings.Contains(l, "gnoring") || strings.Contains(l, "nvalid") || strings.Contains(l, "nbalanced")) {
			return nil, fmt.Errorf("systemd-analyze verify %s: %s", path, l)
		}
	}
	unit := filepath.Base(path)
	cmds := map[string][][]string{}
	in, key, found := false, "", false
	for _, l := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(l, "\t-> Unit "):
			in = strings.TrimSuffix(strings.TrimPrefix(l, "\t-> Unit "), ":") == unit
			found = found || in
			key = ""
		case !in:
		case strings.HasPrefix(l, "\t\t-> Exec") && strings.HasSuffix(l, ":"):
			key = strings.TrimSuffix(strings.TrimPrefix(l, "\t\t-> "), ":")
		case key != "" && strings.HasPrefix(l, "\t\t\tCommand Line: "):
			argv, err := SplitDump(strings.TrimPrefix(l, "\t\t\tCommand Line: "))
			if err != nil {
				return nil, fmt.Errorf("systemd-analyze verify %s: %s: %w", path, key, err)
			}
			cmds[key] = append(cmds[key], argv)
		case strings.HasPrefix(l, "\t\t-> "):
			key = ""
		}
	}
	if !found {
		return nil, fmt.Errorf("systemd-analyze verify %s: no dump of unit %s (needs systemd-analyze of systemd ≥ 235)", path, unit)
	}
	return cmds, nil
}

// SplitDump undoes the quoting of a dumped command line (systemd's
// quote_command_line: each word as is, or double-quoted with \ before
// " \ ` $ and C escapes for control characters), one space between words.
func SplitDump(line string) ([]string, error) {
	var argv []string
	for i := 0; i < len(line); {
		if line[i] != '"' {
			j := strings.IndexByte(line[i:], ' ')
			if j < 0 {
				j = len(line) - i
			}
			argv = append(argv, line[i:i+j])
			i += j + 1
			continue
		}
		var w strings.Builder
		i++
		for {
			if i >= len(line) {
				return nil, fmt.Errorf("unterminated quote in %q", line)
			}
			c := line[i]
			if c == '"' {
				i++
				break
			}
			if c != '\\' {
				w.WriteByte(c)
				i++
				continue
			}
			if i+1 >= len(line) {
				return nil, fmt.Errorf("trailing backslash in %q", line)
			}
			e := line[i+1]
			i += 2
			switch e {
			case 'a':
				w.WriteByte('\a')
			case 'b':
				w.WriteByte('\b')
			case 'f':
				w.WriteByte('\f')
			case 'n':
				w.WriteByte('\n')
			case 'r':
				w.WriteByte('\r')
			case 't':
				w.WriteByte('\t')
			case 'v':
				w.WriteByte('\v')
			case '"', '\\', '`', '$', '\'':
				w.WriteByte(e)
			case '0', '1', '2', '3':
				if i+2 > len(line) {
					return nil, fmt.Errorf("short octal escape in %q", line)
				}
				n, err := strconv.ParseUint(line[i-1:i+2], 8, 8)
				if err != nil {
					return nil, fmt.Errorf("bad octal escape in %q", line)
				}
				w.WriteByte(byte(n))
				i += 2
			default:
				return nil, fmt.Errorf("unknown escape \\%c in %q", e, line)
			}
		}
		argv = append(argv, w.String())
		if i < len(line) {
			if line[i] != ' ' {
				return nil, fmt.Errorf("no space after a quoted word in %q", line)
			}
			i++
		}
	}
	return argv, nil
}

// ExpandDollars is what systemd does to each argument (argv[0] included;
// the executable's path is never expanded) when the command starts, for
// an argument that names no variable: "$$" becomes "$". An argument with
// any other "$" would be expanded, which is an error here.
func ExpandDollars(arg string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(arg); i++ {
		if arg[i] != '$' {
			b.WriteByte(arg[i])
			continue
		}
		if i+1 < len(arg) && arg[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		return "", fmt.Errorf("argument %q would expand a variable", arg)
	}
	return b.String(), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
