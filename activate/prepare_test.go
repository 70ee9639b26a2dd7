package activate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
)

// TestDecide: every view Prepare can read, and what it does about it.
func TestDecide(t *testing.T) {
	v1, v2, v3 := digest.FromString("v1"), digest.FromString("v2"), digest.FromString("v3")
	down := errors.New("source down")
	gen := func(n uint64, d digest.Digest) index.Generation { return index.Generation{Number: n, Digest: d} }
	looping := func(n uint64, d digest.Digest) index.Generation {
		g := gen(n, d)
		g.Failures = DefaultMaxFailures
		return g
	}
	// at is a machine whose link and index agree on generation g.
	at := func(g index.Generation, resolved digest.Digest, failed ...digest.Digest) view {
		return view{resolved: resolved, treeOK: true, link: g.Digest, m: index.Machine{Name: "m", Current: g.Number, Failed: failed}, cur: g}
	}
	with := func(v view, f func(*view)) view { f(&v); return v }
	healthy := looping(2, v2)
	healthy.LongestRun = time.Hour

	for _, c := range []struct {
		name  string
		view  view
		force bool
		want  action
	}{
		{"source down, nothing cached", view{unreachable: down}, false, noCache},
		{"source down, a current tree", with(at(gen(1, v1), ""), func(v *view) { v.unreachable = down }), false, startFromCache},
		{"source down, a link the index does not know", view{unreachable: down, link: v1}, false, startFromCache},
		{"new machine", view{resolved: v1}, false, install},
		{"new machine, tree in the store", view{resolved: v1, treeOK: true}, false, install},
		{"image is current", at(gen(1, v1), v1), false, hit},
		{"image is current, its tree marked broken", with(at(gen(1, v1), v1), func(v *view) { v.treeOK = false }), false, install},
		{"link ahead of the index", with(at(gen(1, v1), v2), func(v *view) { v.link = v2 }), false, install},
		{"index ahead of the link", with(at(gen(2, v2), v1), func(v *view) { v.link = v1 }), false, install},
		{"index names a generation it lacks", with(at(gen(2, v1), v1), func(v *view) { v.cur = index.Generation{} }), false, install},
		{"new image", at(gen(1, v1), v2), false, install},
		{"crash loop", at(looping(2, v2), v2), false, rollback},
		{"crash loop, new image", at(looping(2, v2), v3), false, rollback},
		{"crash loop, --force", at(looping(2, v2), v2), true, hit},
		{"crash loop of a healthy generation", at(healthy, v2), false, hit},
		{"crash loop, index and link disagree", with(at(looping(2, v2), v2), func(v *view) { v.link = v1 }), false, install},
		{"crash loop, no healthy generation", with(at(looping(2, v2), v2), func(v *view) { v.noHealthy = true }), false, hit},
		{"rolled back, image is the failed one", with(at(gen(1, v1), v2, v2), func(v *view) { v.rolledBack = true }), false, decline},
		{"rolled back, new image", with(at(gen(1, v1), v3, v2), func(v *view) { v.rolledBack = true }), false, install},
		{"rolled back, image is the healthy one", with(at(gen(1, v1), v1, v2), func(v *view) { v.rolledBack = true }), false, install},
		{"failed digest", at(gen(1, v1), v2, v2), false, decline},
		{"failed digest, --force", at(gen(1, v1), v2, v2), true, forget},
		{"failed digest, another is current", at(gen(3, v3), v3, v2), false, hit},
		{"image is current, cached for another platform", with(at(gen(1, v1), v1), func(v *view) { v.platform = ocispec.Platform{OS: "linux", Architecture: "other"} }), false, otherPlatform},
		{"image is current, cached for this platform", with(at(gen(1, v1), v1), func(v *view) { v.platform = ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH} }), false, hit},
	} {
		t.Run(c.name, func(t *testing.T) {
			opt := PrepareOptions{Force: c.force}
			opt.defaults()
			if got := decide(c.view, opt); got != c.want {
				t.Errorf("decide = %d, want %d", got, c.want)
			}
		})
	}
}

// TestOutcomeString: what `prepare` prints after "NAME: ".
func TestOutcomeString(t *testing.T) {
	d := digest.FromString("v1")
	for _, c := range []struct {
		o    Outcome
		want string
	}{
		{Outcome{Change: Unchanged, Digest: d, Generation: 1}, "generation 1 " + d.String() + " (unchanged)"},
		{Outcome{Change: Imported, Digest: d, Generation: 2}, "generation 2 " + d.String() + " (imported, activated)"},
		{Outcome{Change: Activated, Digest: d, Generation: 2}, "generation 2 " + d.String() + " (activated)"},
		{Outcome{Change: FromCache, Digest: d, Source: "daemon"}, d.String() + " (cached, daemon unreachable)"},
		{Outcome{Change: Declined, Digest: d, Generation: 1}, "generation 1 " + d.String() + " (image declined: it failed before)"},
		{Outcome{Change: RolledBack, Digest: d, Generation: 3}, "generation 3 " + d.String() + " (rolled back from a crash loop)"},
		{Outcome{Change: RolledBackDeclined, Digest: d, Generation: 1}, "generation 1 " + d.String() + " (rolled back from a crash loop; new image declined)"},
	} {
		if got := c.o.String(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

// garble overwrites one index record with bytes that do not decode. The
// store keeps index.db open only for a transaction, so the test can.
func garble(t *testing.T, s *cache.Store, bucket ...string) {
	t.Helper()
	if err := index.New(filepath.Join(s.Root(), "index.db"), 10*time.Second).GarbleRecord(bucket...); err != nil {
		t.Fatal(err)
	}
}

// A record that fails to decode stops prepare before it imports or
// activates anything: it never reads as a new machine or as a generation
// with no failures (which would turn crash-loop rollback off).
func TestPrepareRefusesUndecodableRecords(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	var gen1 [8]byte
	binary.BigEndian.PutUint64(gen1[:], 1)
	for _, c := range []struct {
		name   string
		record []string
	}{
		{"machine record", []string{"machines", "m"}},
		{"current generation", []string{"generations", "m", string(gen1[:])}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Not storetest's store: the test leaves a garbled record,
			// which its verify at cleanup would rightly report.
			s, err := cache.Open(ctx, t.TempDir(), cache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			src := &fakeSource{images: map[string]string{"app:1": "v1", "app:2": "v2"}}
			if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{}); err != nil {
				t.Fatal(err)
			}
			garble(t, s, c.record...)
			_, err = Prepare(ctx, s, src, log, "m", daemonRef("app:2"), PrepareOptions{})
			if err == nil || !strings.Contains(err.Error(), "machine m") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("prepare over an undecodable %s: %v; want one line naming the machine", c.name, err)
			}
			if src.imports != 1 {
				t.Errorf("prepare imported app:2 before finding the %s unreadable", c.name)
			}
			if cur, _ := CurrentTree(s, "m"); cur != digest.FromString("v1") {
				t.Errorf("the link moved to %s", cur)
			}
		})
	}
}

// TestPrepareRecordsRefOnceStored: a ref the source resolved afresh is
// recorded when prepare has its tree (imported, or already current), and
// a refused import leaves the record where it was.
func TestPrepareRecordsRefOnceStored(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log := slog.New(slog.DiscardHandler)
	src := &fakeSource{images: map[string]string{"app:1": "v1"}, record: true, broken: map[string]bool{"v2": true}}
	recorded := func() digest.Digest {
		t.Helper()
		d, _, _, err := s.LookupRef("app:1")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := recorded(); got != digest.FromString("v1") {
		t.Fatalf("after the import the ref is recorded at %q, want v1's digest", got)
	}
	src.images["app:1"] = "v2" // the tag moves to an image that is refused
	if _, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{Pull: true}); !errors.Is(err, snapshot.ErrDigestMismatch) {
		t.Fatalf("prepare of a broken image: %v, want a digest mismatch", err)
	}
	if got := recorded(); got != digest.FromString("v1") {
		t.Fatalf("after the refused import the ref is recorded at %q, want still v1's", got)
	}
	// The tag moves back; the machine runs it already: recorded again.
	if err := s.RecordRef("app:1", digest.FromString("elsewhere"), digest.FromString("m")); err != nil {
		t.Fatal(err)
	}
	src.images["app:1"] = "v1"
	if o, err := Prepare(ctx, s, src, log, "m", daemonRef("app:1"), PrepareOptions{Pull: true}); err != nil || o.Change != Unchanged {
		t.Fatalf("prepare of the current image: %v, %v; want unchanged", o, err)
	}
	if got := recorded(); got != digest.FromString("v1") {
		t.Fatalf("after a cache hit the ref is recorded at %q, want v1's", got)
	}
}

// TestPreparePlatformOnCacheHit: a tree imported for another platform
// (--platform) serves no prepare that does not ask for that platform:
// neither another machine (the import's cache hit) nor the machine that
// runs it (prepare's hit). Asked, both go on.
func TestPreparePlatformOnCacheHit(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log := slog.New(slog.DiscardHandler)
	src := &fakeSource{images: map[string]string{"app:1": "v1"}, arch: map[string]string{"v1": "riscv64"}}
	other := PrepareOptions{Platform: "linux/riscv64"}
	if _, err := Prepare(ctx, s, src, log, "a", daemonRef("app:1"), other); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"b", "a"} {
		_, err := Prepare(ctx, s, src, log, m, daemonRef("app:1"), PrepareOptions{})
		if !errors.Is(err, snapshot.ErrPlatform) || !strings.Contains(err.Error(), "linux/riscv64") {
			t.Errorf("prepare %s of the cached riscv64 tree without --platform: %v, want refused naming the platform", m, err)
		}
		if o, err := Prepare(ctx, s, src, log, m, daemonRef("app:1"), other); err != nil {
			t.Errorf("prepare %s --platform linux/riscv64: %v", m, err)
		} else if src.imports != 1 {
			t.Errorf("prepare %s: %s after %d imports, want the cached tree", m, o, src.imports)
		}
	}
}
