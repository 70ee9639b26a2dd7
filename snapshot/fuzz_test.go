package snapshot_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/rootswap/rootswap/internal/escapetest"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// FuzzExtract imports arbitrary bytes as a tar stream, seeded with the
// hostile archives of tarCases. Whatever the input, nothing may change
// outside the store (the victim next to it is the oracle, and nothing may
// appear beside the two), and no staging or lease may outlive the import.
// One store serves every input of a worker, so accepted trees accumulate
// as they would in real use.
func FuzzExtract(f *testing.F) {
	seed := env{dir: "/nonexistent", victim: "/nonexistent/victim"}
	for _, c := range tarCases() {
		if a := c.tar(seed); len(a) <= 64<<10 { // the 3000 empty files are too slow a seed
			f.Add(a)
		}
	}
	dir := f.TempDir()
	victim := escapetest.Victim(f, dir)
	s := openStore(f, filepath.Join(dir, "store"))
	o := newOracle(f, dir, victim)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := snapshot.ImportTar(context.Background(), s, bytes.NewReader(data), "")
		o.check(t, victim)
		storetest.CheckIdle(t, s)
		if err != nil && bytes.ContainsRune([]byte(err.Error()), '\n') {
			t.Errorf("error is not one line: %q", err)
		}
	})
}
