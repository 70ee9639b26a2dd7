package storetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// recorder is a testing.TB that keeps what Check reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

// check runs Check on s with a recorder, in its own goroutine so that a
// Fatalf ends only the check.
func check(t *testing.T, s *cache.Store) []string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); Check(r, s) }()
	<-done
	return r.errs
}

func TestCheckFindsDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, s *cache.Store, tree string)
		want   string // in one reported line; "" for none
	}{
		{"sound", func(*testing.T, *cache.Store, string) {}, ""},
		{"file removed from a layer directory", func(t *testing.T, s *cache.Store, tree string) {
			must(t, os.Remove(filepath.Join(tree, "etc/a")))
		}, "etc/a: missing"},
		{"staging left", func(t *testing.T, s *cache.Store, tree string) {
			must(t, os.Mkdir(filepath.Join(s.TmpDir(), "import-1"), 0o700))
		}, "left in tmp/: import-1"},
		{"lease left", func(t *testing.T, s *cache.Store, tree string) {
			must(t, s.Update(func(tx *index.Tx) error { return tx.PutLease(index.Lease{ID: "import-9"}) }))
		}, "leases left"},
		{"layer directory file linked from outside", func(t *testing.T, s *cache.Store, tree string) {
			must(t, os.Link(filepath.Join(tree, "etc/empty"), filepath.Join(s.Root(), "outside")))
		}, "and is no object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := cache.Open(context.Background(), filepath.Join(t.TempDir(), "store"), cache.Options{LockTimeout: LockTimeout})
			if err != nil {
				t.Fatal(err)
			}
			d := Import(t, s, "", File{Name: "etc/a", Content: "a"}, File{Name: "etc/empty"})
			// An import is a one-layer stack: its files are in its layer
			// directory.
			var tr index.Tree
			must(t, s.View(func(tx *index.Tx) (err error) { tr, err = tx.Tree(d); return err }))
			if len(tr.Stack) != 1 {
				t.Fatalf("the import's stack: %v, want one layer", tr.Stack)
			}
			tc.damage(t, s, s.LayerDirPath(tr.Stack[0]))
			errs := check(t, s)
			found := false
			for _, e := range errs {
				found = found || tc.want != "" && strings.Contains(e, tc.want)
			}
			if tc.want == "" && len(errs) > 0 || tc.want != "" && !found {
				t.Errorf("Check reported %q, want a line containing %q", errs, tc.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
