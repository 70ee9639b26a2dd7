package cache

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// machine records name at tree d in the index (one generation) and points
// its link at d, as activate does.
func machine(t *testing.T, s *Store, name string, d digest.Digest) {
	t.Helper()
	err := s.Update(func(tx *index.Tx) error {
		g, err := tx.AppendGeneration(name, index.Generation{Digest: d, Time: time.Now(), Reason: "test"})
		if err != nil {
			return err
		}
		return tx.PutMachine(index.Machine{Name: name, Current: g.Number})
	})
	if err != nil {
		t.Fatal(err)
	}
	setLink(t, s, name, LinkTarget(d))
}

func setLink(t *testing.T, s *Store, name, target string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(s.MachineLink(name)), 0o755)
	os.RemoveAll(s.MachineLink(name))
	if err := os.Symlink(target, s.MachineLink(name)); err != nil {
		t.Fatal(err)
	}
}

func machineProblems(rep *VerifyReport, name string) []string {
	var out []string
	for _, p := range rep.Problems {
		if p.Kind == "machine" && p.Path == name {
			out = append(out, p.String())
		}
	}
	return out
}

func TestVerifyMalformedLinks(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	d := build(t, s, digest.FromString("a"), reg("f", "a", 0o644)).Digest
	gone := digest.FromString("removed")
	machine(t, s, "web", d)
	// An empty target cannot be made on Linux; TestParseLinkTarget has it.
	for name, mk := range map[string]func(){
		"x":         func() { setLink(t, s, "web", "x") },
		"slash":     func() { setLink(t, s, "web", "/") },
		"no hex":    func() { setLink(t, s, "web", "../../trees/sha256/") },
		"md5":       func() { setLink(t, s, "web", "../../trees/md5/abc") },
		"absolute":  func() { setLink(t, s, "web", s.TreePath(d)) },
		"dotdot":    func() { setLink(t, s, "web", LinkTarget(d)+"/..") },
		"dangling":  func() { setLink(t, s, "web", LinkTarget(gone)) },
		"directory": func() { os.RemoveAll(s.MachineLink("web")); os.Mkdir(s.MachineLink("web"), 0o755) },
		"regular file": func() {
			os.RemoveAll(s.MachineLink("web"))
			os.WriteFile(s.MachineLink("web"), []byte(LinkTarget(d)), 0o644)
		},
		"missing":          func() { os.RemoveAll(s.MachineLink("web")) },
		"unindexed record": func() { setLink(t, s, "api", LinkTarget(d)) },
	} {
		t.Run(name, func(t *testing.T) {
			mk()
			defer setLink(t, s, "web", LinkTarget(d))
			defer os.RemoveAll(filepath.Join(s.MachinesDir(), "api"))
			rep, err := s.Verify(ctx, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			who := "web"
			if name == "unindexed record" {
				who = "api"
			}
			if got := machineProblems(rep, who); len(got) != 1 {
				t.Errorf("problems for machine %s: %q, want one; all: %v", who, got, rep.Problems)
			}
		})
	}
	rep, err := s.Verify(ctx, nil, false)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("sound store: %v, %v", rep.Problems, err)
	}
}

// A crash (or a full disk) between flip and the index commit leaves the
// link ahead of the index: verify says so, and --repair adopts the link.
func TestVerifyLinkAheadOfIndex(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	d1 := build(t, s, digest.FromString("1"), reg("f", "1", 0o644)).Digest
	d2 := build(t, s, digest.FromString("2"), reg("f", "2", 0o644)).Digest
	machine(t, s, "web", d1)
	setLink(t, s, "web", LinkTarget(d2))
	rep, err := s.Verify(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	got := machineProblems(rep, "web")
	if len(got) != 1 || !strings.Contains(got[0], "generation 1") || !strings.Contains(got[0], "--repair") {
		t.Fatalf("problems %q, want one naming generation 1 and --repair", got)
	}
	if rep, err = s.Verify(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
	var m index.Machine
	var gens []index.Generation
	s.View(func(tx *index.Tx) (err error) {
		if m, err = tx.Machine("web"); err == nil {
			gens, err = tx.Generations("web")
		}
		return err
	})
	if len(gens) != 2 || gens[1].Digest != d2 || m.Current != 2 || gens[1].Reason != "recovered" {
		t.Fatalf("after repair: machine %+v, generations %+v; want generation 2 at %s, recovered", m, gens, d2)
	}
	if rep, err = s.Verify(ctx, nil, false); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("after repair: %v, %v", rep.Problems, err)
	}
}

// deepDirs makes, under dir, directories nested until their path is
// longer than PATH_MAX, through relative names (os.Root), so that a walk
// by full paths cannot read the deepest: an unreadable directory, as
// root, who reads everything else.
func deepDirs(t *testing.T, dir string) {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 250)
	for range 20 {
		if err := r.Mkdir(name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := r.OpenRoot(name)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		r = next
	}
	r.Close()
}

// TestVerifyReportsUnreadableDirectories: a directory of a plain tree or
// of a layer directory that verify cannot read is a problem that says
// so, never skipped.
func TestVerifyReportsUnreadableDirectories(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "store"), Options{LockTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	plain := build(t, s, digest.FromString("plain"), reg("f", "1", 0o644))
	deepDirs(t, s.TreePath(plain.Digest))
	ids, dirs := stackLayers(t, s)
	st := publishStack(t, s, digest.FromString("stack"), ids, dirs)
	deepDirs(t, s.LayerDirPath(st.Stack[0]))
	rep, err := s.Verify(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tree " + plain.Digest.String(), "layerdir " + st.Stack[0].String()} {
		found := false
		for _, p := range rep.Problems {
			found = found || strings.HasPrefix(p.String(), want) && strings.Contains(p.Detail, "unreadable")
		}
		if !found {
			t.Errorf("none of %d problems says %s has an unreadable directory", len(rep.Problems), want)
		}
	}
	// Gone again, so the directories can be removed with the test's.
	for _, p := range []string{s.TreePath(plain.Digest), s.LayerDirPath(st.Stack[0])} {
		if err := os.RemoveAll(filepath.Join(p, strings.Repeat("d", 250))); err != nil {
			t.Fatal(err)
		}
	}
}
