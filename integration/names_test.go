package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/internal/testimage"
)

// machineNames mirrors activate's table (activate/name_test.go): names
// systemd-nspawn accepts for --machine, and names it refuses.
var machineNames = struct{ ok, bad []string }{
	ok: []string{"a", "0", "A9", "web-1", "a--b", "a.b", "a.b-c.d",
		strings.Repeat("x", 64), strings.Repeat("a.", 31) + "bc"},
	bad: []string{"_x", "a_b", "a.", "a..b", ".a", "-a", "a-", "a.-b", "a-.b", ".host",
		strings.Repeat("x", 65), "a b", "a:b", "a@b"},
}

// TestMachineNamesAsNspawnDoes checks the name table against
// systemd-nspawn's own --machine check, then runs every accepted name
// under nspawn and has rootswap refuse every other one up front (exit 2,
// one line), before it could become a machine directory or a unit that
// fails on every start.
func TestMachineNamesAsNspawnDoes(t *testing.T) {
	needIntegration(t)
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		t.Fatal(err)
	}
	// nspawn checks --machine before it looks at the directory, so a
	// missing one tells accepted from refused without starting anything.
	nspawnAccepts := func(name string) bool {
		out, _ := exec.Command(nspawn, "--quiet", "--machine="+name, "--directory=/nonexistent/rootswap-names-test", "/bin/true").CombinedOutput()
		return !strings.Contains(string(out), "Invalid machine name")
	}
	for _, n := range machineNames.ok {
		if !nspawnAccepts(n) {
			t.Errorf("systemd-nspawn refuses %q, which the table accepts", n)
		}
	}
	for _, n := range machineNames.bad {
		if nspawnAccepts(n) {
			t.Errorf("systemd-nspawn accepts %q, which the table refuses", n)
		}
	}

	v1, _ := testimage.Images(t)
	s := newStore(t)
	for _, n := range machineNames.ok {
		s.ok("prepare", n, v1)
		if r := s.run("run", n, "/bin/true"); r.code != 0 {
			t.Errorf("run %s /bin/true: exit %d\n%s", n, r.code, r.stderr)
		}
	}
	for _, n := range machineNames.bad {
		for _, args := range [][]string{{"prepare", n, v1}, {"run", n, "/bin/true"}, {"unit", n, v1}} {
			mention := []string{"invalid machine name"}
			if strings.HasPrefix(n, "-") {
				mention = nil // taken for an option: refused all the same
			}
			r := s.fail(2, mention, args...)
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines != 1 {
				t.Errorf("rootswap %q: %d lines on stderr, want 1:\n%s", args, lines, r.stderr)
			}
		}
	}
}
