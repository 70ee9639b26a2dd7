package cache

import (
	"context"
	"os"
	"path/filepath"
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
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			s.CleanTmp(ctx)
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		st, err := s.NewStaging("race")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
		if _, err := os.Stat(st.Dir); err != nil {
			t.Fatalf("live staging %s removed by a cleaner after %d rounds: %v", st.ID, n, err)
		}
		if _, err := os.Stat(st.Dir + ".lock"); err != nil {
			t.Fatalf("live staging lock %s removed after %d rounds: %v", st.ID, n, err)
		}
		st.Remove()
		n++
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d stagings created under a busy cleaner", n)
}
