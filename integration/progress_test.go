package integration

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// TestProgressInANarrowTerminal imports in a 40-column tmux pane: when the
// import is done, the pane must hold no progress line (it is erased) and no
// line pushed right by a cursor left at the end of a wrapped bar.
func TestProgressInANarrowTerminal(t *testing.T) {
	needIntegration(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux not installed")
	}
	v1, _ := testimage.Images(t)
	s := newStore(t)
	sock := fmt.Sprintf("rootswap-test-%d", os.Getpid())
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cmdline := fmt.Sprintf("%s --root %s import %s; echo __done__; exec sleep 600", rootswapBin(t), s.root, v1)
	tmux("new-session", "-d", "-s", "t", "-x", "40", "-y", "10", cmdline)
	t.Cleanup(func() { exec.Command("tmux", "-L", sock, "kill-server").Run() })
	var pane string
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		pane = tmux("capture-pane", "-p", "-J", "-t", "t")
		if strings.Contains(pane, "__done__") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import did not finish in the pane:\n%s", pane)
		}
	}
	if !strings.Contains(pane, "sha256:") {
		t.Errorf("no digest printed:\n%s", pane)
	}
	for _, line := range strings.Split(pane, "\n") {
		if regexp.MustCompile(`: \d+ files`).MatchString(line) {
			t.Errorf("stale progress line %q in:\n%s", line, pane)
		}
		if strings.HasPrefix(line, " ") {
			t.Errorf("line pushed right by a wrapped bar %q in:\n%s", line, pane)
		}
	}
}

// TestPullProgressInANarrowTerminal pulls an image of several layers
// from the registry with -v in a 40-column tmux pane, after a first pull
// that stored its base layer: the pane keeps the line for the skipped
// layer and a "done" line per blob fetched, no status line (the bar is
// erased), and every debug line starts at the left edge, never printed
// onto the bar.
func TestPullProgressInANarrowTerminal(t *testing.T) {
	needIntegration(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux not installed")
	}
	v1, v2 := testimage.Images(t)
	reg := startRegistry(t, registryOpts{})
	base := pushImageAs(t, reg, v1, "rootswap-test/progress:v1")
	ref := pushImageAs(t, reg, v2, "rootswap-test/progress:v2")
	s := newStore(t)
	s.ok("import", "docker://"+base)
	sock := fmt.Sprintf("rootswap-test-pull-%d", os.Getpid())
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cmdline := fmt.Sprintf("%s -v --root %s import docker://%s; echo __done__; exec sleep 600", rootswapBin(t), s.root, ref)
	tmux("new-session", "-d", "-s", "t", "-x", "40", "-y", "50", cmdline)
	t.Cleanup(func() { exec.Command("tmux", "-L", sock, "kill-server").Run() })
	var pane string
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		pane = tmux("capture-pane", "-p", "-t", "t")
		if strings.Contains(pane, "__done__") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import did not finish in the pane:\n%s", pane)
		}
	}
	t.Logf("pane after the pull:\n%s", pane)
	if !strings.Contains(pane, "layers in the store: skipped") || !regexp.MustCompile(`(?m)^blob [0-9a-f]{12}: .* done$`).MatchString(pane) {
		t.Errorf("no skipped line or no blob done line:\n%s", pane)
	}
	for _, line := range strings.Split(pane, "\n") {
		if regexp.MustCompile(`\d+/\d+ layers|%`).MatchString(line) {
			t.Errorf("stale status line %q in:\n%s", line, pane)
		}
		if i := strings.Index(line, "level="); i > 0 {
			t.Errorf("log line printed onto another %q in:\n%s", line, pane)
		}
	}
}
