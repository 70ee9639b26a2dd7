package gc

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rootswap/rootswap/internal/fsys"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

const benchFiles = 10000

// benchArchive is a tree of benchFiles small files with distinct content,
// 100 to a directory.
func benchArchive(b *testing.B) []byte {
	files := make([]storetest.File, benchFiles)
	for i := range files {
		files[i] = storetest.File{
			Name:    fmt.Sprintf("d%03d/f%05d", i/100, i),
			Content: fmt.Sprintf("%-100s", fmt.Sprintf("file %d", i)),
		}
	}
	return storetest.Archive(b, files...)
}

// BenchmarkRemoveTree compares gc of one stale tree of benchFiles small
// files (its tree and its objects: twice as many names) with rm -rf of a
// plain copy of the same tree. Trees and copies are built with the timer
// stopped, and synced as an import syncs its tree.
//
//	go test -run '^$' -bench RemoveTree -benchtime 5x ./gc
func BenchmarkRemoveTree(b *testing.B) {
	tarball := benchArchive(b)
	ctx := context.Background()
	b.Run("gc", func(b *testing.B) {
		s := storetest.New(b)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			t, err := snapshot.ImportTar(ctx, s, bytes.NewReader(tarball), "")
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			rep, err := Collect(ctx, s, Options{Keep: DefaultKeep})
			if err != nil {
				b.Fatal(err)
			}
			if len(rep.Trees) != 1 || rep.Trees[0].Digest != t.Digest || rep.Objects != benchFiles {
				b.Fatalf("gc removed %d trees, %d objects; want 1 and %d", len(rep.Trees), rep.Objects, benchFiles)
			}
		}
	})
	b.Run("rmrf", func(b *testing.B) {
		s := storetest.New(b)
		t, err := snapshot.ImportTar(ctx, s, bytes.NewReader(tarball), "")
		if err != nil {
			b.Fatal(err)
		}
		work := b.TempDir()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dst := filepath.Join(work, "copy")
			if out, err := exec.Command("cp", "-a", s.TreePath(t.Digest), dst).CombinedOutput(); err != nil {
				b.Fatalf("cp: %v: %s", err, out)
			}
			// Like the store's trees, the copy is on disk: unsynced files
			// whose blocks were never allocated are cheaper to delete.
			if err := fsys.Syncfs(dst); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if out, err := exec.Command("rm", "-rf", dst).CombinedOutput(); err != nil {
				b.Fatalf("rm: %v: %s", err, strings.TrimSpace(string(out)))
			}
		}
	})
}
