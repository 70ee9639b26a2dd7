package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// crashTar writes a rootfs archive of n files whose content depends on
// variant in one file only, so that successive variants are real imports
// that mostly dedupe.
func crashTar(t *testing.T, dir string, n, variant int) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	for _, d := range []string{"usr/", "usr/share/", "usr/share/data/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < n; i++ {
		data := make([]byte, 512+rng.IntN(8192))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if i == 0 {
			data = []byte(fmt.Sprintf("variant %d\n", variant))
		}
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("usr/share/data/f%05d", i), Mode: 0o644, Size: int64(len(data)), ModTime: mt})
		tw.Write(data)
	}
	tw.Close()
	p := filepath.Join(dir, fmt.Sprintf("crash-%d.tar", variant))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// exitState is how a rootswap process ended.
type exitState struct {
	result
	killed bool // by SIGKILL
}

// start runs rootswap with args and extra environment; if delay >= 0 it
// sends SIGKILL after delay unless the process has ended by then.
func (s *store) start(delay time.Duration, env []string, args ...string) exitState {
	s.t.Helper()
	cmd := exec.Command(rootswapBin(s.t), append([]string{"--root", s.root}, args...)...)
	cmd.Env = append(append(os.Environ(), s.env...), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	if delay >= 0 {
		select {
		case <-done:
		case <-time.After(delay):
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	<-done
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return exitState{
		result: result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode(), took: time.Since(start)},
		killed: ws.Signaled() && ws.Signal() == syscall.SIGKILL,
	}
}

type historyRow struct {
	Generation uint64 `json:"generation"`
	Digest     string `json:"digest"`
	Current    bool   `json:"current"`
}

// crashRig is the store TestCrashAnywhere kills commands on, and how each
// kind of command is set up so that it does real work: machine m switches
// between two pinned tar trees (activate, rollback) and the images v1 and
// v2, pinned too (prepare); machine cold gets an image the store has never seen
// (prepare-cold); gc always finds an unused tree with an object of its own.
type crashRig struct {
	t        *testing.T
	s        *store
	dir      string
	v        [2]string // images
	vd       [2]string // their digests
	pinned   [2]string // tar trees
	variants int
}

func (r *crashRig) history(name string) []historyRow {
	r.t.Helper()
	var hist []historyRow
	if err := json.Unmarshal([]byte(r.s.ok("history", name, "--json")), &hist); err != nil {
		r.t.Fatalf("history %s --json: %v", name, err)
	}
	return hist
}

// current is the digest machine name's link points at: what runs.
func (r *crashRig) current(name string) string {
	r.t.Helper()
	target, err := os.Readlink(filepath.Join(r.s.root, "machines", name, "current"))
	if err != nil {
		r.t.Fatal(err)
	}
	return "sha256:" + filepath.Base(target)
}

// newTar is a crash tar of a variant never used before.
func (r *crashRig) newTar(n int) string {
	r.variants++
	return crashTar(r.t, r.dir, n, r.variants)
}

// args sets the store up for one run of kind and returns the command.
func (r *crashRig) args(kind string) []string {
	t, s := r.t, r.s
	other := func(cur string, of [2]string) string {
		if cur == of[0] {
			return of[1]
		}
		return of[0]
	}
	switch kind {
	case "import":
		return []string{"import", "--tar", r.newTar(800)}
	case "prepare":
		cur := r.current("m")
		if cur == r.vd[0] {
			return []string{"prepare", "m", r.v[1]}
		}
		return []string{"prepare", "m", r.v[0]}
	case "prepare-cold":
		r.variants++
		ref := fmt.Sprintf("rootswap-test/crash:%d-%d", os.Getpid(), r.variants)
		tar := crashTar(t, r.dir, 60, r.variants)
		if out, err := exec.Command("docker", "import", tar, ref).CombinedOutput(); err != nil {
			t.Fatalf("docker import: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
		return []string{"prepare", "cold", ref}
	case "activate":
		return []string{"activate", "m", other(r.current("m"), r.pinned)}
	case "rollback":
		hist := r.history("m")
		cur := r.current("m")
		want := other(cur, r.pinned)
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].Digest == want {
				return []string{"rollback", "m", "--to", strconv.FormatUint(hist[i].Generation, 10)}
			}
		}
		t.Fatalf("machine m has no generation of %s to roll back to", want)
	case "gc":
		s.ok("import", "--tar", r.newTar(40)) // unused: gc removes it and its own object
		return []string{"gc", "--keep", "2"}
	}
	t.Fatalf("unknown kind %q", kind)
	return nil
}

// afterCrash checks the store after a command was killed: verify is clean,
// the trees current before the kill are intact, every machine resolves to
// a complete tree, the killed command succeeds when run again, and after
// one more command nothing is left in tmp/.
// It returns how long the run again took.
func (r *crashRig) afterCrash(what string, before map[string]string, args []string) time.Duration {
	t, s := r.t, r.s
	t.Helper()
	// A kill between the index commit and the rename leaves the index one
	// generation ahead of the link: verify must report it, and that is
	// the only problem a kill may leave; running the command again mends
	// it (checked below with a second verify).
	if res := s.run("verify"); res.code != 0 && !onlyLinkLag(res.stdout) {
		t.Fatalf("%s: verify after the kill: exit %d\n%s%s", what, res.code, res.stdout, res.stderr)
	}
	for name, d := range before {
		if res := s.run("verify", d); res.code != 0 {
			t.Fatalf("%s: machine %s's previous current tree %s is damaged:\n%s%s", what, name, d, res.stdout, res.stderr)
		}
	}
	for _, m := range s.machines() {
		if err := completeTree(filepath.Join(s.root, "machines", m.Name, "current")); err != nil {
			t.Fatalf("%s: machine %s does not resolve to a complete tree: %v", what, m.Name, err)
		}
	}
	again := s.run(args...)
	if again.code != 0 {
		t.Fatalf("%s: run again: exit %d: %s", what, again.code, again.stderr)
	}
	// The index and the links agree again once the command has run.
	for _, m := range s.machines() {
		var idx string
		for _, h := range r.history(m.Name) {
			if h.Current {
				idx = h.Digest
			}
		}
		if link := r.current(m.Name); idx != link {
			t.Fatalf("%s: after running it again, machine %s's link points at %s but the index's current generation is %q", what, m.Name, link, idx)
		}
	}
	if res := s.run("verify"); res.code != 0 {
		t.Fatalf("%s: verify after running it again: exit %d\n%s%s", what, res.code, res.stdout, res.stderr)
	}
	s.ok("list")
	if ents, _ := os.ReadDir(filepath.Join(s.root, "tmp")); len(ents) != 0 {
		names := []string{}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%s: left in tmp/ after two more commands: %v", what, names)
	}
	if staged, _ := filepath.Glob(filepath.Join(s.root, "machines", "*", ".current-*")); len(staged) > 0 {
		t.Fatalf("%s: staged links left after the command ran again: %v", what, staged)
	}
	return again.took
}

// completeTree checks that the tree dir names resolves: a plain tree
// has its usr/, a stack (layer@0 …, as a pull makes it) a directory
// behind each of its layer links. (verify, run before, checks a stack's
// links against its record and each layer directory against its
// manifest.)
func completeTree(dir string) error {
	layers, err := filepath.Glob(filepath.Join(dir, "layer@*"))
	if err != nil || len(layers) == 0 {
		_, err := os.Stat(filepath.Join(dir, "usr"))
		return err
	}
	for _, l := range layers {
		fi, err := os.Stat(l)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is no directory", l)
		}
	}
	return nil
}

// onlyLinkLag reports whether every problem verify printed is a machine
// whose link and index disagree in the way the next command reconciles.
func onlyLinkLag(out string) bool {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "problem:") {
			if !strings.Contains(l, "the next prepare or activate of the machine reconciles") {
				return false
			}
			n++
		}
	}
	return n > 0
}

func (r *crashRig) currents() map[string]string {
	out := map[string]string{}
	for _, m := range r.s.machines() {
		out[m.Name] = m.Digest
	}
	return out
}

// killKind is one kind of command the random kills hit: args sets the
// store up for one run and returns the command; every gcEvery-th trial of
// the kind is followed by `gc --keep 2`, to keep the store small (0:
// never).
type killKind struct {
	name    string
	args    func() []string
	gcEvery int
}

// randomKills is the random layer of a crash test: trials kills, the kinds
// taken in turn, each at a delay drawn uniformly from [0, 1.2 × the kind's
// median uninterrupted duration] on this machine, each followed by
// afterCrash. The median is of the last seven runs, three uninterrupted
// ones before the trials and then every trial's run again, so it follows
// the load of a shared machine. A kill that comes after the command ended
// tests nothing: the trial is tried again with a new command, killed
// within the duration just measured, up to three times; how many kills
// landed is logged, never judged (the failpoints already kill at every
// step deterministically; this layer adds the moments between them).
// ROOTSWAP_CRASH_SEED replays a logged run's choices; stream tells the
// tests' random streams apart.
func (r *crashRig) randomKills(kinds []killKind, trials int, stream uint64) {
	t, s := r.t, r.s
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ROOTSWAP_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ROOTSWAP_CRASH_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("random kills: seed %d (replay with ROOTSWAP_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, stream))
	took := map[string][]time.Duration{}
	median := func(kind string) time.Duration {
		d := slices.Clone(took[kind][max(0, len(took[kind])-7):])
		slices.Sort(d)
		return d[len(d)/2]
	}
	for _, k := range kinds {
		for range 3 {
			args := k.args()
			e := s.start(-1, nil, args...)
			if e.code != 0 {
				t.Fatalf("uninterrupted %s (%v): exit %d: %s", k.name, args, e.code, e.stderr)
			}
			took[k.name] = append(took[k.name], e.took)
			if res := s.run("verify"); res.code != 0 {
				t.Fatalf("verify after an uninterrupted %s: %s%s", k.name, res.stdout, res.stderr)
			}
		}
		t.Logf("uninterrupted %s: median %s of %v", k.name, median(k.name), took[k.name])
	}
	landed, ran, missed := map[string]int{}, map[string]int{}, map[string]int{}
	for i := range trials {
		k := kinds[i%len(kinds)]
		ran[k.name]++
		limit := median(k.name) * 6 / 5
		for attempt := 1; ; attempt++ {
			before := r.currents()
			args := k.args()
			delay := time.Duration(rng.Int64N(max(int64(limit), 1)))
			e := s.start(delay, nil, args...)
			if !e.killed && e.code != 0 {
				t.Fatalf("trial %d: %v: exit %d before the kill: %s", i, args, e.code, e.stderr)
			}
			took[k.name] = append(took[k.name], r.afterCrash(fmt.Sprintf("trial %d, attempt %d: %s killed after %s (%v)", i, attempt, k.name, delay, args), before, args))
			if e.killed {
				landed[k.name]++
				break
			}
			missed[k.name]++
			if attempt == 3 {
				break
			}
			limit = e.took // it ended before the kill: kill the next one within its time
		}
		if k.gcEvery > 0 && ran[k.name]%k.gcEvery == 0 {
			s.ok("gc", "--keep", "2")
		}
	}
	for _, k := range kinds {
		t.Logf("%s: %d of %d trials killed it while it ran, %d more runs ended before the kill (median %s)",
			k.name, landed[k.name], ran[k.name], missed[k.name], median(k.name))
	}
}

// crashPoints lists, for each kind of command, the failpoints it passes,
// in publish order.
var crashPoints = func() map[string][]string {
	extract := []string{"snapshot-mid-extract"}
	commit := []string{"cache-staged", "cache-synced", "cache-manifest-renamed", "cache-tree-renamed", "cache-before-index", "cache-after-index"}
	flip := []string{"flip-before-symlink", "flip-temp-link", "flip-recorded", "flip-renamed"}
	activate := []string{"activate-before-index", "activate-after-index"}
	cat := func(l ...[]string) []string {
		var out []string
		for _, x := range l {
			out = append(out, x...)
		}
		return out
	}
	return map[string][]string{
		"import":       cat(extract, commit),
		"prepare-cold": cat([]string{"snapshot-container-created"}, extract, commit, flip, activate),
		"prepare":      cat(flip, activate),
		"activate":     cat(flip, activate),
		"rollback":     cat(flip, []string{"rollback-before-index", "rollback-after-index"}),
		"gc":           {"gc-records-deleted", "gc-trees-aside", "gc-manifests-removed", "gc-mid-objects"},
	}
}()

// sourcePoints returns every failpoint.Hit name in the production code, so
// that a point added there without a trial here fails the test.
func sourcePoints(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`failpoint\.Hit\("([^"]+)"\)`)
	found := map[string]bool{}
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "failpoint") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			found[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestCrashAnywhere kills import, prepare, rollback, activate and gc and
// checks the store after every kill (see afterCrash). Two layers:
//
//  1. Failpoints: each command is killed at every named step of the publish
//     order it passes (ROOTSWAP_FAILPOINT), independent of machine speed.
//     The process must die there by SIGKILL: a point it never reaches
//     would be a trial that tests nothing.
//  2. Random kills (see randomKills) at a delay drawn uniformly from [0,
//     1.2 × the kind's median uninterrupted duration], measured on this
//     machine. ROOTSWAP_CRASH_TRIALS sets their number (default 60, spread
//     over the kinds), ROOTSWAP_CRASH_SEED replays a logged run's choices.
func TestCrashAnywhere(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	s := newStore(t)
	r := &crashRig{t: t, s: s, dir: t.TempDir(), v: [2]string{v1, v2}}
	if s.run("gc", "--help").code != 0 {
		t.Fatal("gc is not built")
	}
	s.ok("prepare", "m", v1)
	s.ok("prepare", "m", v2)
	for i := range r.v {
		r.vd[i] = strings.TrimSpace(s.ok("import", r.v[i]))
		s.ok("pin", r.vd[i]) // so that prepare of m never imports: one kind, one duration
	}
	for i := range r.pinned {
		r.pinned[i] = strings.TrimSpace(s.ok("import", "--tar", r.newTar(800)))
		s.ok("pin", r.pinned[i])
		s.ok("activate", "m", r.pinned[i])
	}
	s.ok(r.args("prepare-cold")...)

	// Every point in the code has a trial, and every trial's point is in
	// the code.
	inSource := sourcePoints(t)
	tested := map[string]bool{}
	for _, p := range pullCrashPoints { // TestPullCrash's
		tested[p] = true
		if !inSource[p] {
			t.Errorf("failpoint %q has trials but no failpoint.Hit in the code", p)
		}
	}
	for _, p := range updateCrashPoints { // TestSdbedUpdateKilled's, under the bed's systemd
		tested[p] = true
		if !inSource[p] {
			t.Errorf("failpoint %q has trials but no failpoint.Hit in the code", p)
		}
	}
	for _, pts := range crashPoints {
		for _, p := range pts {
			tested[p] = true
			if !inSource[p] {
				t.Errorf("failpoint %q has trials but no failpoint.Hit in the code", p)
			}
		}
	}
	for p := range inSource {
		if !tested[p] {
			t.Errorf("failpoint %q is in the code but no crash trial kills there", p)
		}
	}

	// 1. Failpoints.
	kinds := []string{"import", "prepare-cold", "prepare", "activate", "rollback", "gc"}
	for _, kind := range kinds {
		for _, point := range crashPoints[kind] {
			before := r.currents()
			args := r.args(kind)
			what := fmt.Sprintf("%s at failpoint %s (%v)", kind, point, args)
			e := s.start(-1, []string{"ROOTSWAP_FAILPOINT=" + point}, args...)
			if !e.killed || !strings.Contains(e.stderr, "rootswap: failpoint "+point+"\n") {
				t.Fatalf("%s: the command was not killed there (exit %d, killed %v): the point is not reached\n%s%s",
					what, e.code, e.killed, e.stdout, e.stderr)
			}
			if point == "snapshot-container-created" && len(deadExports(t)) == 0 {
				t.Fatalf("%s: no export container of a dead process is left: the reap after it tests nothing", what)
			}
			r.afterCrash(what, before, args)
		}
		if kind == "import" || kind == "gc" {
			s.ok("gc", "--keep", "2") // keep the store small
		}
	}

	// 2. Random kills, calibrated per kind on this machine. prepare-cold
	// is left to the failpoints: each trial costs a docker import.
	trials := 60
	if n, err := strconv.Atoi(os.Getenv("ROOTSWAP_CRASH_TRIALS")); err == nil {
		trials = n
	}
	var random []killKind
	for _, kind := range []string{"import", "prepare", "activate", "rollback", "gc"} {
		k := killKind{name: kind, args: func() []string { return r.args(kind) }}
		if kind == "import" {
			k.gcEvery = 5
		}
		random = append(random, k)
	}
	r.randomKills(random, trials, 7)

	// A killed export cannot remove its container (the failpoint
	// snapshot-container-created leaves one); the next cold import removes
	// every one whose process is gone.
	s.ok(r.args("prepare-cold")...)
	if leaked := deadExports(t); len(leaked) > 0 {
		t.Errorf("containers of killed imports survived the next import: %v", leaked)
	}
}

// deadExports lists export containers whose creating process is gone: the
// leaks a killed import leaves. (Those of live processes belong to imports
// under way, maybe other tests' on the same daemon.)
func deadExports(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label=org.rootswap.export",
		"--format", `{{.Names}} {{.Label "org.rootswap.pid"}}`).CombinedOutput()
	if err != nil {
		t.Fatalf("docker ps: %v\n%s", err, out)
	}
	var dead []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, pid, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); err != nil {
			dead = append(dead, name)
		}
	}
	return dead
}
