package cache

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A cleaner running while staging is being created must never remove a
// live staging directory (it did when the lock file was created first and
// locked a moment later).
func TestCleanTmpNeverRemovesLiveStaging(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The cleaner counts its passes, so every round can wait until one
	// whole pass has run while its staging was live: a fixed number of
	// rounds, each of which really met the cleaner, however fast or slow
	// the machine (a time box could end after no round at all on a slow one).
	var stop atomic.Bool
	var passes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			s.CleanTmp(ctx)
			passes.Add(1)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	const rounds = 200
	for n := 0; n < rounds; n++ {
		st, err := s.NewStaging("race")
		if err != nil {
			t.Fatal(err)
		}
		// A pass that started after NewStaging returned has ended once the
		// counter moved twice.
		for p0, deadline := passes.Load(), time.Now().Add(30*time.Second); passes.Load() < p0+2; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the cleaner made no pass in 30s", n)
			}
			runtime.Gosched()
		}
		if _, err := os.Stat(st.Dir); err != nil {
			t.Fatalf("live staging %s removed by a cleaner after %d rounds: %v", st.ID, n, err)
		}
		if _, err := os.Stat(st.Dir + ".lock"); err != nil {
			t.Fatalf("live staging lock %s removed after %d rounds: %v", st.ID, n, err)
		}
		st.Remove()
	}
	t.Logf("%d stagings created under a cleaner that made %d passes", rounds, passes.Load())
}
