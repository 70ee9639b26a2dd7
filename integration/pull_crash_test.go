package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// pullCrashPoints are the failpoints a registry pull passes before the
// publish order TestCrashAnywhere already kills at (cache-*, flip-*,
// activate-*), in order: mid-layer is after a layer is read and verified,
// before its record; the cache-layer-* points are that record's publish
// order; mid-merge is after every layer is recorded, before any layer
// directory is built; the cache-layerdir-* points are a layer
// directory's publish order (a pull of three new layers passes them
// first for the lowest); layerdirs-published is after every layer
// directory is recorded, before the stack is built. The stack's own
// publish order (cache-staged … cache-after-index) follows, killed here
// too, since a pull makes a stack where an export makes a plain tree.
// TestCrashAnywhere counts these as tested here.
var pullCrashPoints = []string{"snapshot-mid-layer", "cache-layer-staged", "cache-layer-synced", "cache-layer-manifest-renamed",
	"cache-layer-before-index", "cache-layer-after-index", "snapshot-mid-merge",
	"cache-layerdir-staged", "cache-layerdir-synced", "cache-layerdir-renamed", "cache-layerdir-before-index", "cache-layerdir-after-index",
	"snapshot-layerdirs-published",
	"cache-staged", "cache-synced", "cache-manifest-renamed", "cache-tree-renamed", "cache-before-index", "cache-after-index"}

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
// uninterrupted pull] measured on this machine, as randomKills does
// (ROOTSWAP_PULL_CRASH_TRIALS, default 12; ROOTSWAP_CRASH_SEED replays a
// logged run).
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
	r.randomKills([]killKind{{name: "pull", args: next, gcEvery: 4}}, trials, 13)
}
