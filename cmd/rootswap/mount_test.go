package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// TestMountRefusals: mount and umount refuse in one line, with the exit
// status of their class, what they cannot do: a directory in the store
// (2), a name that is no machine and a digest that is no tree (1), an
// umount of what rootswap did not mount (2).
func TestMountRefusals(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s := storetest.Open(t, root)
	d := storetest.Import(t, s, "img:1", storetest.File{Name: "f", Content: "x"})
	if _, _, err := activate.Activate(context.Background(), s, "web", d, "img:1", "test"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"mount", "web", filepath.Join(root, "trees")}, 2, "inside the store"},
		{[]string{"mount", "web", filepath.Dir(root)}, 2, "would hide the store"},
		{[]string{"mount", "web", filepath.Join(dir, "missing")}, 2, "not a mount point rootswap can use"},
		{[]string{"mount", "nosuch", dir}, 1, "mount nosuch: no machine of that name"},
		{[]string{"mount", digest.FromString("none").String(), dir}, 1, "not found"},
		{[]string{"mount", "web"}, 2, "takes 2 argument(s)"},
		{[]string{"umount", dir}, 2, "nothing is mounted there"},
	} {
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"--root", root}, tc.args...))
		prev := stderr
		stderr = &out
		code := exitCode(cmd.Execute())
		stderr = prev
		got := strings.TrimSpace(out.String())
		if code != tc.code || !strings.Contains(got, tc.want) || strings.Count(got, "\n") > 0 {
			t.Errorf("%v: exit %d, %q; want exit %d and one line with %q", tc.args, code, got, tc.code, tc.want)
		}
	}
}
