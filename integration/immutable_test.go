package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// skipOptionCheck makes `rootswap run` pass every option to nspawn
// unchecked, so these tests reach the read-only mount, the real safety
// mechanism, with options the early check would have refused.
const skipOptionCheck = "ROOTSWAP_UNSAFE_SKIP_OPTION_CHECK=1"

// attack is the payload of every immutability test, run as
// sh -c attack sh STORE PATH…. It copies busybox to the container's /tmp
// (a tmpfs nspawn mounts), lists everything on the root file system and
// on each of the container PATHs that is a mount point (where the test
// binds store paths), then tries to write, chmod, chown, touch, create in,
// rename and unlink every entry. Every mount of something outside STORE
// is pruned (/proc, /sys, /dev, /run, /tmp, nspawn's binds of host files,
// the running tree's own /proc and /sys that a bound store shows again
// below the tree): the container is root, and those lead to the host. It ends with "attack-done N" (N entries tried).
const attack = `B=/tmp/busybox
/bin/busybox cp /bin/busybox $B || exit 97
store=$1; shift
roots=/
for r in "$@"; do $B grep -q "^[^ ]* [^ ]* [^ ]* [^ ]* $r " /proc/self/mountinfo && roots="$roots $r"; done
set --
for m in $($B awk -v s="$store" 'index($4, s "/") != 1 && $4 != s { print $5 }' /proc/self/mountinfo); do
  case " $roots " in *" $m "*) ;; *) set -- "$@" -path "$m" -o ;; esac
done
$B find $roots \( "$@" -path /nonexistent/sentinel \) -prune -o -print > /tmp/.l 2>/dev/null
n=0; while read -r p; do n=$((n+1)); done < /tmp/.l
$B xargs $B chmod 0777 < /tmp/.l >/dev/null 2>&1
$B xargs $B chown -h 4242:4242 < /tmp/.l >/dev/null 2>&1
$B xargs $B touch -c -t 200101010000 < /tmp/.l >/dev/null 2>&1
while read -r p; do
  if [ -f "$p" ] && [ ! -L "$p" ]; then echo pwned >> "$p"; $B truncate -s 1 "$p"; fi
  if [ -d "$p" ] && [ ! -L "$p" ]; then echo > "$p/PWNED"; fi
done < /tmp/.l 2>/dev/null
$B tac /tmp/.l | while read -r p; do $B mv "$p" "$p.moved"; done >/dev/null 2>&1
$B tac /tmp/.l | while read -r p; do $B rm -rf "$p.moved" "$p"; done >/dev/null 2>&1
echo attack-done $n`

// boundPaths are the container paths the tests bind store paths to.
var boundPaths = []string{"/s", "/o", "/t", "/r", "/ov", "/ov2"}

// storeState is what must not change: the full listing of one tree
// (type, mode, owner, mtime, content hash, inode), of objects/, of the
// layer directories a stack's overlay stands on, and of the store as a
// whole (without the index and lock files).
type storeState struct {
	tree, objects, layers map[string]entry
	all                   string
}

func snapshotStore(t *testing.T, s *store, tree string) storeState {
	t.Helper()
	st := storeState{
		tree:    describe(t, tree),
		objects: describe(t, filepath.Join(s.root, "objects")),
		all:     listing(t, s.root),
	}
	if layers := filepath.Join(s.root, "layerdirs"); dirExists(layers) {
		st.layers = describe(t, layers)
	}
	return st
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// unchanged reports every difference between two states, at most a few
// per part, so a failure says what the container managed to change.
func (b storeState) unchanged(t *testing.T, a storeState, what string) {
	t.Helper()
	diff := func(part string, before, after map[string]entry) {
		var bad []string
		for p, e := range before {
			if got, ok := after[p]; !ok {
				bad = append(bad, p+" removed")
			} else if got != e {
				bad = append(bad, fmt.Sprintf("%s: %+v -> %+v", p, e, got))
			}
		}
		for p := range after {
			if _, ok := before[p]; !ok {
				bad = append(bad, p+" created")
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			if len(bad) > 5 {
				bad = append(bad[:5], fmt.Sprintf("… and %d more", len(bad)-5))
			}
			t.Errorf("STORE WRITTEN by a container (%s): %s changed: %s", what, part, strings.Join(bad, "; "))
		}
	}
	diff("the tree", b.tree, a.tree)
	diff("objects/", b.objects, a.objects)
	diff("layerdirs/", b.layers, a.layers)
	if b.all != a.all {
		t.Errorf("STORE WRITTEN by a container (%s): the store listing changed", what)
	}
}

// attackWith runs the attack under `rootswap run app OPTS` and checks the
// store afterwards. It returns whether the attack ran to its end.
func attackWith(t *testing.T, s *store, tree string, opts []string) bool {
	t.Helper()
	before := snapshotStore(t, s, tree)
	args := append(append(append([]string{"run", "app"}, opts...), "/bin/sh", "-c", attack, "sh", s.root), boundPaths...)
	r := s.run(args...)
	done := strings.Contains(r.stdout, "attack-done")
	t.Logf("run %s: exit %d, attack ran: %v; %s", strings.Join(opts, " "), r.code, done, lastLine(r.stdout+r.stderr))
	before.unchanged(t, snapshotStore(t, s, tree), strings.Join(opts, " "))
	return done
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// immutableStore prepares machine app in a new store whose runs skip the
// early option check, from an image with the mount points a read-only
// root needs, so that nspawn gets as far as starting the container.
func immutableStore(t *testing.T) (*store, string) {
	t.Helper()
	needIntegration(t)
	ref := imageWithRun(t)
	s := newStore(t)
	s.ok("prepare", "app", ref)
	s.env = append(s.env, skipOptionCheck)
	return s, s.treePath(testimage.ImageID(t, ref))
}

// TestStoreImmutable runs the attack with option spellings and orders
// that got past the old deny-list, with the early check switched off:
// only the read-only mount stands between the container and the store.
func TestStoreImmutable(t *testing.T) {
	s, tree := immutableStore(t)
	st := s.root
	for _, tc := range []struct {
		opts []string
		runs bool // the container must start (the attack cannot pass by nspawn failing)
	}{
		{nil, true},
		{[]string{"--volatile=no"}, false},
		{[]string{"--volatile=off"}, false},
		{[]string{"--volatile", "no"}, false},
		{[]string{"--volatile=N"}, false},
		{[]string{"--volatile=False"}, false},
		{[]string{"--volatile=0"}, false},
		{[]string{"-U"}, false},
		{[]string{"-qU"}, false},
		{[]string{"--private-users=pick", "--private-users-ownership=chown"}, false},
		{[]string{"--private-users-chown"}, false},
		{[]string{"--suppress-sync", "yes", "--volatile=no"}, false},
		{[]string{"--ambient-capability", "CAP_CHOWN", "--volatile=n"}, false},
		{[]string{"--oci-bundle", "/nonexistent", "--volatile=f"}, false},
		{[]string{"--bind=" + st + "/objects:/o"}, true},
		{[]string{"--bind=" + st + ":/s"}, true},
		{[]string{"--bind", st + "/trees:/t", "--volatile=off"}, false},
		{[]string{"--overlay=" + tree + ":" + st + "/machines:/o"}, false},
		{[]string{"--overlay=+/etc:" + st + "/machines:/etc"}, false},
		{[]string{"--read-only", "--volatile=no"}, false},
		{[]string{"--read-only", "--volatile=no", "--bind=" + st + ":/s"}, false},
		{[]string{"--volatile=no", "--private-users=pick", "--private-users-ownership=map"}, false},
		{[]string{"--suppress-sync", "yes", "--bind=" + st + ":/s"}, true},
	} {
		name := strings.ReplaceAll(strings.Join(tc.opts, " "), st, "$STORE")
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			if ran := attackWith(t, s, tree, tc.opts); tc.runs && !ran {
				t.Errorf("the container did not run the attack")
			}
		})
	}
	// The store check at cleanup runs verify.
}

// TestStoreImmutableRandomOptions runs the attack under random option
// lists drawn from nspawn's vocabulary (ROOTSWAP_IMMUTABLE_SEED replays a
// run, ROOTSWAP_IMMUTABLE_LISTS sets how many lists).
func TestStoreImmutableRandomOptions(t *testing.T) {
	s, tree := immutableStore(t)
	st := s.root
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ROOTSWAP_IMMUTABLE_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("ROOTSWAP_IMMUTABLE_SEED=%q: %v", v, err)
		}
	}
	lists := 24
	if v := os.Getenv("ROOTSWAP_IMMUTABLE_LISTS"); v != "" {
		lists, _ = strconv.Atoi(v)
	}
	t.Logf("seed %d (replay with ROOTSWAP_IMMUTABLE_SEED=%d)", seed, seed)
	// Each entry is one option with its value(s), in every spelling nspawn
	// takes. CAP_SYS_ADMIN is left out: a container holding it can remount
	// anything (see the README's safety section).
	vocab := [][]string{
		{"--volatile=no"}, {"--volatile=off"}, {"--volatile", "n"}, {"--volatile=FALSE"}, {"--volatile=0"},
		{"--volatile=overlay"}, {"--volatile=state"}, {"--volatile=yes"}, {"--read-only"},
		{"-U"}, {"--private-users=pick"}, {"--private-users=yes"}, {"--private-users=no"},
		{"--private-users-ownership=chown"}, {"--private-users-ownership", "auto"}, {"--private-users-ownership=off"},
		{"--private-users-chown"},
		{"--bind=" + st + ":/s"}, {"--bind", st + "/objects:/o"}, {"--bind=" + st + "/trees:/t"}, {"--bind-ro=" + st + ":/r"},
		{"--overlay=" + tree + ":" + st + "/machines:/ov"}, {"--overlay=" + st + "/objects:/tmp/u:/ov2"},
		{"--tmpfs=/scratch"}, {"--suppress-sync", "yes"}, {"--suppress-sync=no"},
		{"--ambient-capability", "CAP_CHOWN"}, {"--capability=CAP_FOWNER"}, {"--drop-capability", "CAP_DAC_OVERRIDE"},
		{"--oci-bundle", "/nonexistent"}, {"--link-journal=no"}, {"--resolv-conf=off"}, {"--timezone=off"},
		{"-q"}, {"--setenv", "X=1"}, {"-E", "Y=2"}, {"--chdir=/"}, {"--no-new-privileges=yes"},
		{"--personality", "x86-64"}, {"--kill-signal", "SIGKILL"}, {"--as-pid2"}, {"--pipe"},
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ran := 0
	for i := 0; i < lists; i++ {
		var opts []string
		for n := 1 + rng.IntN(5); n > 0; n-- {
			opts = append(opts, vocab[rng.IntN(len(vocab))]...)
		}
		if attackWith(t, s, tree, opts) {
			ran++
		}
		if t.Failed() {
			t.Fatalf("list %d failed; replay with ROOTSWAP_IMMUTABLE_SEED=%d", i, seed)
		}
	}
	t.Logf("%d of %d lists started the container and ran the attack", ran, lists)
	if ran == 0 {
		t.Errorf("no option list let the container start: the invariant was never tested")
	}
}

// imageWithRun builds an image from v1 with the mount points a read-only
// root needs (/run, and /srv/data for a bind).
func imageWithRun(t *testing.T) string {
	t.Helper()
	v1, _ := testimage.Images(t)
	dir := t.TempDir()
	df := fmt.Sprintf("FROM %s\nRUN mkdir -p /run /srv/data\n", v1)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("rootswap-test/readonly:%d", time.Now().UnixNano())
	if out, err := exec.Command("docker", "build", "--network", "none", "--force-rm", "-q", "-t", ref, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
	return ref
}

// TestRunReadOnly: --read-only gives a read-only root (no overlay), and
// read-only roots missing a mount point are refused before nspawn starts.
func TestRunReadOnly(t *testing.T) {
	needIntegration(t)
	v1, _ := testimage.Images(t)
	s := newStore(t)
	s.ok("prepare", "app", imageWithRun(t))
	out := s.ok("run", "app", "--read-only", "/bin/sh", "-c", "echo x > /etc/probe && echo WROTE; echo done")
	if strings.Contains(out, "WROTE") || !strings.Contains(out, "done") {
		t.Errorf("run --read-only: the root was writable: %q", out)
	}
	out = s.ok("run", "app", "/bin/sh", "-c", "echo x > /etc/probe && echo WROTE")
	if !strings.Contains(out, "WROTE") {
		t.Errorf("run without --read-only: the overlay root was not writable: %q", out)
	}
	s.ok("run", "app", "--read-only", "--bind-ro=/etc:/srv/data", "/bin/true")

	// The v1 image has neither /run nor /srv/data nor /var/none.
	s.ok("prepare", "old", v1)
	s.fail(1, []string{"old", "/run"}, "run", "old", "--read-only", "/bin/true")
	s.fail(1, []string{"old", "/run"}, "run", "old", "--volatile=state", "/bin/true")
	s.fail(1, []string{"app", "/var/none", "--bind"}, "run", "app", "--volatile=state", "--bind=/etc:/var/none", "/bin/true")
	// With the overlay, nspawn makes missing mount points itself.
	s.ok("run", "old", "--bind-ro=/etc:/var/none", "/bin/true")
}

// TestRunChecks: --private-users on a tree stored as layers (an overlay,
// which the kernel cannot ID-map) is refused unless ownership is off, and
// then runs with a shifted uid map and the image's files owned by nobody
// inside; a tree verify --repair found damaged says so when it runs (a
// plain tree runs with a warning, a stack whose damaged layer directory
// repair removed is one line naming what brings it back); a bind of the
// store is refused, and a missing ROOTSWAP_NSPAWN is named.
func TestRunChecks(t *testing.T) {
	needIntegration(t)
	ref := imageWithRun(t)
	s := newStore(t)
	s.ok("prepare", "app", ref)
	tree := s.treePath(testimage.ImageID(t, ref))
	before := snapshotStore(t, s, tree)
	s.fail(1, []string{"app", "--private-users", "stored as layers", "--private-users-ownership=off"},
		"run", "app", "--read-only", "--private-users=pick", "/bin/true")
	out := s.ok("run", "app", "--read-only", "--private-users=pick", "--private-users-ownership=off", "/bin/sh", "-c",
		"cat /proc/self/uid_map; stat -c %u /etc/passwd; true")
	if f := strings.Fields(out); len(f) < 4 || f[1] == "0" || f[3] != "65534" {
		t.Errorf("--private-users=pick --private-users-ownership=off: got %q, want a shifted uid map and /etc/passwd owned by nobody inside", out)
	}
	before.unchanged(t, snapshotStore(t, s, tree), "--private-users=pick")

	// Damage /etc/passwd where the stack's topmost layer that has it
	// holds it (a link of its object): verify --repair finds it.
	links, _ := filepath.Glob(filepath.Join(tree, "layer@*"))
	damaged := ""
	for i := len(links) - 1; i >= 0 && damaged == ""; i-- {
		if p := filepath.Join(tree, fmt.Sprintf("layer@%d", i), "etc", "passwd"); fileExists(p) {
			damaged = p
		}
	}
	if damaged == "" {
		t.Fatalf("no layer of %s holds etc/passwd", tree)
	}
	f, err := os.OpenFile(damaged, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("damage\n")
	f.Close()
	s.run("verify", "--repair")
	s.damaged("verify --repair marked app's tree broken on purpose")
	r := s.run("run", "app", "/bin/true")
	t.Logf("run of the damaged tree: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	if r.code == 0 {
		if !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "broken") {
			t.Errorf("run of a broken tree: stderr %q; want a warning", r.stderr)
		}
	} else if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || !strings.Contains(r.stderr, "missing") || !strings.Contains(r.stderr, "prepare") {
		t.Errorf("run of a stack whose damaged layer repair removed: exit %d, stderr %q; want one line naming what is missing and prepare", r.code, r.stderr)
	}

	// Binding the store in would show the tree's own /proc/sys writable.
	s.fail(1, []string{"app", "would bind the store"}, "run", "app", "--bind-ro="+s.root+"/objects:/o", "/bin/true")

	s.env = append(s.env, "ROOTSWAP_NSPAWN=/nonexistent/nspawn")
	s.fail(1, []string{"app", "ROOTSWAP_NSPAWN", "/nonexistent/nspawn", "no such file"}, "run", "app", "/bin/true")
}

// TestGCSeesRunningContainer: a container started by `run` keeps its tree
// from gc although no machine points at it any more.
func TestGCSeesRunningContainer(t *testing.T) {
	needIntegration(t)
	_, v2 := testimage.Images(t)
	ref := imageWithRun(t)
	s := newStore(t)
	d1 := testimage.ImageID(t, ref)
	// The overlay (lowerdir= names the tree) and a read-only root (nspawn
	// bind-mounts the tree, seen as a bind mount of its path).
	for _, opts := range [][]string{nil, {"--read-only"}} {
		s.ok("prepare", "app", ref)
		cmd := exec.Command(rootswapBin(t), append(append([]string{"--root", s.root, "run", "app"}, opts...), "/bin/sh", "-c", "trap 'exit 0' TERM; echo started; sleep 100000 & wait")...)
		cmd.Env = os.Environ()
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
		t.Cleanup(stop)
		if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "started" {
			t.Fatalf("run %v: %q", opts, line)
		}
		s.ok("prepare", "app", v2)
		var rep struct {
			Trees []struct {
				Digest string `json:"digest"`
			} `json:"trees"`
			Kept []struct {
				Digest string `json:"digest"`
				Why    string `json:"why"`
			} `json:"kept"`
		}
		plan := s.ok("gc", "--keep", "0", "--dry-run", "--json")
		if err := json.Unmarshal([]byte(plan), &rep); err != nil {
			t.Fatalf("gc --dry-run --json: %v\n%s", err, plan)
		}
		why := ""
		for _, k := range rep.Kept {
			if k.Digest == d1 {
				why = k.Why
			}
		}
		t.Logf("run %v: gc keeps v1 because %q", opts, why)
		if !strings.Contains(why, "in use") {
			t.Errorf("run %v: gc would remove the running tree: %s", opts, plan)
		}
		stop()
	}
}
