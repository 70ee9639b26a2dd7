package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ", nil},
		{"a", []string{"a"}},
		{"a, b,,c ", []string{"a", "b", "c"}},
	} {
		got := parse(tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("parse(%q) = %v, want %v", tc.in, got, tc.want)
		}
		for _, n := range tc.want {
			if !got[n] {
				t.Errorf("parse(%q) = %v, lacks %q", tc.in, got, n)
			}
		}
	}
}

// TestHitKills runs this test binary as a child that hits points, and
// checks that it dies by SIGKILL at the armed one and only there.
func TestHitKills(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit("other")
		os.Stdout.WriteString("passed other\n")
		Hit("here")
		os.Stdout.WriteString("passed here\n")
		os.Exit(0)
	}
	for _, tc := range []struct {
		env      string
		killed   bool
		stdout   string
		stderrOK string
	}{
		{"", false, "passed other\npassed here\n", ""},
		{"nowhere", false, "passed other\npassed here\n", ""},
		{"x,here", true, "passed other\n", "rootswap: failpoint here\n"},
		{"other", true, "", "rootswap: failpoint other\n"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHitKills$")
		cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"="+tc.env)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		if killed != tc.killed || (!tc.killed && err != nil) {
			t.Errorf("%s=%q: %v, killed %v, want killed %v", Env, tc.env, err, killed, tc.killed)
		}
		if out.String() != tc.stdout {
			t.Errorf("%s=%q: stdout %q, want %q", Env, tc.env, out.String(), tc.stdout)
		}
		if !strings.Contains(errb.String(), tc.stderrOK) {
			t.Errorf("%s=%q: stderr %q, want %q", Env, tc.env, errb.String(), tc.stderrOK)
		}
	}
}
