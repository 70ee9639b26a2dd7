package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pullCrashPoints are the failpoints a registry pull passes before the
// publish order TestCrashAnywhere already kills at (cache-*, flip-*,
// activate-*), in order: mid-layer is after a layer is read and verified,
// before its record; the cache-layer-* points are that record's publish
// order; mid-merge is after every layer is recorded, before the tree is
// built. TestCrashAnywhere counts these as tested here.
var pullCrashPoints = []string{"snapshot-mid-layer", "cache-layer-staged", "cache-layer-synced", "cache-layer-manifest-renamed",
	"cache-layer-before-index", "cache-layer-after-index", "snapshot-mid-merge"}

// pullCrashImage pushes a new three-layer image to reg as
// rootswap-test/crash-pull:N and returns its docker:// source. Each layer
// holds the same 300 paths (crashTar's) with one file differing by
// variant, so every layer replaces most of the one below (the merge has
// work), every blob is new to the store (the fetch has work), and most
// objects dedupe (the store stays small).
func pullCrashImage(t *testing.T, reg *registry, dir string, variant int) string {
	t.Helper()
	var ls []rawLayer
	for k := range 3 {
		b, err := os.ReadFile(crashTar(t, dir, 300, variant*10+k))
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, gzipTar(t, b))
	}
	config := imageConfig(t, ls[0].diffID, ls[1].diffID, ls[2].diffID)
	ref, _ := pushRaw(t, reg, fmt.Sprintf("rootswap-test/crash-pull:%d", variant), config, ls, nil)
	return "docker://" + ref
}

// TestPullCrash kills registry pulls (prepare of an image the store has
// never seen, from a docker:// source) and checks the store after every
// kill with TestCrashAnywhere's afterCrash: verify clean, the machines'
// previous trees intact, the pull succeeds when run again, nothing left
// in tmp/. First at each pullCrashPoints failpoint (the process must die
// there), then at random delays drawn from [0, 1.2 × the median
// uninterrupted pull] measured on this machine (ROOTSWAP_PULL_CRASH_TRIALS,
// default 12; ROOTSWAP_CRASH_SEED replays a logged run).
func TestPullCrash(t *testing.T) {
	needIntegration(t)
	reg := startRegistry(t, registryOpts{})
	s := newStore(t)
	r := &crashRig{t: t, s: s, dir: t.TempDir()}
	variant := 0
	next := func() []string {
		variant++
		return []string{"prepare", "m", pullCrashImage(t, reg, r.dir, variant)}
	}
	s.ok(next()...)

	for _, point := range pullCrashPoints {
		before := r.currents()
		args := next()
		what := fmt.Sprintf("pull at failpoint %s (%v)", point, args)
		e := s.start(-1, []string{"ROOTSWAP_FAILPOINT=" + point}, args...)
		if !e.killed || !strings.Contains(e.stderr, "rootswap: failpoint "+point+"\n") {
			t.Fatalf("%s: not killed there (exit %d, killed %v): the point is not reached\n%s%s", what, e.code, e.killed, e.stdout, e.stderr)
		}
		r.afterCrash(what, before, args)
	}

	trials := 12
	if n, err := strconv.Atoi(os.Getenv("ROOTSWAP_PULL_CRASH_TRIALS")); err == nil {
		trials = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ROOTSWAP_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ROOTSWAP_CRASH_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("random kills: seed %d (replay with ROOTSWAP_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 13))
	var took []time.Duration
	median := func() time.Duration {
		d := slices.Clone(took[max(0, len(took)-7):])
		slices.Sort(d)
		return d[len(d)/2]
	}
	for range 3 {
		e := s.start(-1, nil, next()...)
		if e.code != 0 {
			t.Fatalf("uninterrupted pull: exit %d: %s", e.code, e.stderr)
		}
		took = append(took, e.took)
	}
	t.Logf("uninterrupted pull: median %s of %v", median(), took)
	landed := 0
	for i := range trials {
		before := r.currents()
		args := next()
		delay := time.Duration(rng.Int64N(int64(median()) * 6 / 5))
		e := s.start(delay, nil, args...)
		if e.killed {
			landed++
		} else if e.code != 0 {
			t.Fatalf("trial %d: %v: exit %d before the kill: %s", i, args, e.code, e.stderr)
		}
		took = append(took, r.afterCrash(fmt.Sprintf("trial %d: pull killed after %s (%v)", i, delay, args), before, args))
		if i%4 == 3 {
			s.ok("gc", "--keep", "2")
		}
	}
	t.Logf("%d of %d random kills landed while the pull ran (median %s)", landed, trials, median())
	if landed*4 < trials {
		t.Errorf("only %d of %d kills landed while the pull ran: the delays do not match its duration (seed %d)", landed, trials, seed)
	}
}
