package index

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Writers committing while readers open the file never make anyone see
// damage, and neither side starves the other: every transaction of a
// sound file succeeds within the DB's timeout. Each DB value opens the
// file on its own, as separate processes do; the index holds thousands
// of layer records, so the file spans many pages, and every commit
// rewrites pages that earlier commits freed. Both sides run in tight
// loops, a bounded number of times each. (Before the damage check ran
// under bbolt's lock, a reader's check walked pages a writer was
// rewriting: "page N is referred to twice"; with the check under the
// lock but no turnstile, overlapping readers kept the writers out until
// "store busy".)
func TestConcurrentTransactionsSeeNoDamage(t *testing.T) {
	path := newDB(t).Path()
	defer ForgetDamage()
	layer := func(w, i int) Layer {
		d := digest.FromString(fmt.Sprintf("%d/%d", w, i))
		return Layer{DiffID: d, Blobs: []digest.Digest{d}, Files: int64(i)}
	}
	const writers, readers, commits, views, held = 3, 3, 12, 25, 4000
	const timeout = 20 * time.Second // far above a transaction's time under any contention here
	err := New(path, timeout).Update(func(tx *Tx) error {
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
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := New(path, timeout)
			for c := range commits {
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
			}
		}()
	}
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := New(path, timeout)
			for v := range views {
				if err := db.View(func(tx *Tx) error { _, err := tx.Layer(layer(-1, 0).DiffID); return err }); err != nil {
					errs <- fmt.Errorf("reader %d, view %d: %w", r, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
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
