package index

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Writers committing while readers open the file never make anyone see
// damage: every transaction of a sound file succeeds. Each DB value opens
// the file on its own, as separate processes do; the index holds thousands
// of layer records, so the file spans many pages, and every commit
// rewrites pages that earlier commits freed. (Before the damage check ran
// under bbolt's lock, a reader's check walked pages a writer was
// rewriting: "page N is referred to twice".)
func TestConcurrentTransactionsSeeNoDamage(t *testing.T) {
	path := newDB(t).Path()
	defer ForgetDamage()
	layer := func(w, i int) Layer {
		d := digest.FromString(fmt.Sprintf("%d/%d", w, i))
		return Layer{DiffID: d, Blobs: []digest.Digest{d}, Files: int64(i)}
	}
	const writers, readers, rounds, held = 3, 3, 50, 4000
	err := New(path, time.Minute).Update(func(tx *Tx) error {
		for i := range held {
			if err := tx.PutLayer(layer(-1, i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The readers read a bounded number of times, each time once another
	// commit landed, and the writers commit until they are done, each time
	// once another read was done: flock prefers no waiter, so readers or
	// writers that never pause would starve the others.
	var wg, rg sync.WaitGroup
	var commits, views atomic.Int64
	errs := make(chan error, writers+readers)
	done := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := New(path, time.Minute)
			for c := 0; ; c++ {
				select {
				case <-done:
					return
				default:
				}
				err := db.Update(func(tx *Tx) error {
					if c > 0 { // drop the previous commit's, so pages are freed and reused
						if err := tx.DeleteLayer(layer(w, c-1).DiffID); err != nil {
							return err
						}
					}
					return tx.PutLayer(layer(w, c))
				})
				if err != nil {
					errs <- fmt.Errorf("writer %d, commit %d: %w", w, c, err)
					return
				}
				commits.Add(1)
				for seen := views.Load(); views.Load() == seen; time.Sleep(time.Millisecond) {
					select {
					case <-done:
						return
					default:
					}
				}
			}
		}()
	}
	for r := range readers {
		rg.Add(1)
		go func() {
			defer rg.Done()
			db := New(path, time.Minute)
			for v := range rounds {
				seen := commits.Load()
				if err := db.View(func(tx *Tx) error { _, err := tx.Layer(layer(-1, 0).DiffID); return err }); err != nil {
					errs <- fmt.Errorf("reader %d, view %d: %w", r, v, err)
					return
				}
				views.Add(1)
				for deadline := time.Now().Add(time.Minute); commits.Load() == seen; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("reader %d: no commit for a minute", r)
						return
					}
				}
			}
		}()
	}
	rg.Wait()
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d views, %d commits meanwhile", views.Load(), commits.Load())
	if commits.Load() == 0 {
		t.Error("no commit ran while the readers read")
	}
}

// A damage verdict recorded while another transaction ran is dropped when
// that transaction succeeds: the file has just been read whole, so the
// process reads it afresh rather than repeat a verdict about another
// moment.
func TestVerdictForgottenAfterASuccess(t *testing.T) {
	db := newDB(t)
	defer ForgetDamage()
	err := db.View(func(*Tx) error {
		if err := db.damaged("found meanwhile"); !errors.Is(err, ErrDamaged) {
			t.Fatalf("damaged: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the transaction that ran meanwhile: %v", err)
	}
	if err := db.View(func(*Tx) error { return nil }); err != nil {
		t.Fatalf("a View after one succeeded: %v, want the file read afresh", err)
	}
}
