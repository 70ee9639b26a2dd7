package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/rootswap/rootswap/internal/testimage"
)

// splitExec undoes the quoting of an Exec line as systemd does for the
// subset rootswap writes: double quotes with \" and \\, %% and $$.
func splitExec(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			inQuote, have = !inQuote, true
		case c == '\\' && inQuote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case (c == '%' || c == '$') && i+1 < len(line) && line[i+1] == c:
			i++
			cur.WriteByte(c)
		case c == ' ' && !inQuote:
			if have || cur.Len() > 0 {
				args = append(args, cur.String())
			}
			cur.Reset()
			have = false
		default:
			cur.WriteByte(c)
		}
	}
	if have || cur.Len() > 0 {
		args = append(args, cur.String())
	}
	return args
}

// serviceRun is one start of a generated unit, as systemd would do it.
type serviceRun struct {
	pre, run, post []string
	env            []string
}

func loadService(t *testing.T, path string) serviceRun {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.Deserialize(f)
	if err != nil {
		t.Fatal(err)
	}
	var sr serviceRun
	for _, o := range opts {
		switch o.Name {
		case "ExecStartPre":
			sr.pre = splitExec(o.Value)
		case "ExecStart":
			sr.run = splitExec(o.Value)
		case "ExecStopPost":
			sr.post = splitExec(o.Value)
		case "Environment":
			sr.env = append(sr.env, o.Value)
		}
	}
	return sr
}

func (sr serviceRun) exec(t *testing.T, argv []string, env ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), sr.env...), env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return 0, string(out)
}

// cycle is one start of the service: ExecStartPre, ExecStart, then
// ExecStopPost with the environment systemd sets for it.
func (sr serviceRun) cycle(t *testing.T) (preOut string, status int) {
	t.Helper()
	code, out := sr.exec(t, sr.pre)
	if code != 0 {
		t.Fatalf("ExecStartPre %v: exit %d\n%s", sr.pre, code, out)
	}
	status, _ = sr.exec(t, sr.run)
	result := "success"
	if status != 0 {
		result = "exit-code"
	}
	if code, out := sr.exec(t, sr.post, "SERVICE_RESULT="+result, "EXIT_CODE=exited", "EXIT_STATUS="+strconv.Itoa(status)); code != 0 {
		t.Fatalf("ExecStopPost: exit %d\n%s", code, out)
	}
	return out, status
}

// TestGeneratedUnitCrashLoopRollsBack drives a generated unit through the
// sequence systemd would: a healthy v1, then a v2 whose payload exits 1 at
// once; after three failed starts the next ExecStartPre rolls back to v1.
//
// "At once" is relative to this machine: --healthy-after is five times the
// measured duration of a run whose payload exits at once (at least 2 s),
// and v1's payload sleeps longer than that, so neither side of the health
// line depends on the machine's speed.
func TestGeneratedUnitCrashLoopRollsBack(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	s := newStore(t)
	tag := "rootswap-test/unit:" + strconv.FormatInt(time.Now().UnixNano(), 10)
	retag := func(img string) {
		if out, err := exec.Command("docker", "tag", img, tag).CombinedOutput(); err != nil {
			t.Fatalf("docker tag: %v\n%s", err, out)
		}
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", tag).Run() })
	retag(v1)
	healthy := quickRun(t, s, v1) * 5
	healthy = max(2*time.Second, healthy.Round(time.Second)+time.Second)
	sleep := strconv.Itoa(int(healthy/time.Second) + 1)
	t.Logf("--healthy-after %s, v1 sleeps %ss", healthy, sleep)
	dir := t.TempDir()
	s.ok("unit", "--install", "--unit-dir", dir, "--healthy-after", healthy.String(), "app", tag, "--",
		"/bin/sh", "-c", "if grep -q v2 /etc/rootswap-version; then exit 1; fi; sleep "+sleep)
	sr := loadService(t, filepath.Join(dir, "rootswap-app.service"))

	if _, status := sr.cycle(t); status != 0 {
		t.Fatalf("v1 run: exit %d", status)
	}
	retag(v2)
	for i := 1; i <= 3; i++ {
		if _, status := sr.cycle(t); status != 1 {
			t.Fatalf("v2 run %d: exit %d, want 1", i, status)
		}
	}
	code, out := sr.exec(t, sr.pre)
	if code != 0 || !strings.Contains(out, "rolled back") {
		t.Fatalf("ExecStartPre after three failures: exit %d\n%s", code, out)
	}
	if status, _ := sr.exec(t, sr.run); status != 0 {
		t.Errorf("the rolled-back v1 does not run: exit %d", status)
	}
	// v2 stays declined while the tag names it.
	if code, out := sr.exec(t, sr.pre); code != 0 || !strings.Contains(out, "declined") {
		t.Errorf("ExecStartPre with the failed digest still tagged: exit %d\n%s", code, out)
	}
	hist := s.ok("history", "--healthy-after", healthy.String(), "app")
	if !strings.Contains(hist, "failed") || !strings.Contains(hist, "healthy") {
		t.Errorf("history does not show health:\n%s", hist)
	}
	if got := s.ok("run", "app", "/bin/cat", "/etc/rootswap-version"); !strings.Contains(got, "v1") {
		t.Errorf("current after rollback: %q", got)
	}
}

// quickRun is the median duration of `rootswap run` of image img with a
// payload that exits at once: what a crash-looping start costs here.
func quickRun(t *testing.T, s *store, img string) time.Duration {
	t.Helper()
	s.ok("prepare", "quickrun", img)
	var took []time.Duration
	for range 3 {
		r := s.run("run", "quickrun", "/bin/false")
		if r.code != 1 {
			t.Fatalf("run quickrun /bin/false: exit %d, want 1: %s", r.code, r.stderr)
		}
		took = append(took, r.took)
	}
	slices.Sort(took)
	return took[1]
}
