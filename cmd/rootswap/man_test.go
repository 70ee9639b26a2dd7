package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestManPages: `rootswap man DIR` writes a page per command, generated
// from its help: name, description, options and examples, with no
// generator footer; the hidden man command has none.
func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	if code, out := execute(t, "man", dir); code != 0 {
		t.Fatalf("rootswap man: exit %d\n%s", code, out)
	}
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if !sub.IsAvailableCommand() {
				if _, err := os.Stat(filepath.Join(dir, strings.ReplaceAll(sub.CommandPath(), " ", "-")+".1")); err == nil {
					t.Errorf("%s is hidden but has a page", sub.CommandPath())
				}
				continue
			}
			page := filepath.Join(dir, strings.ReplaceAll(sub.CommandPath(), " ", "-")+".1")
			b, err := os.ReadFile(page)
			if err != nil {
				t.Errorf("%s: %v", sub.CommandPath(), err)
				continue
			}
			n++
			s := string(b)
			for _, want := range []string{".TH \"ROOTSWAP\" \"1\"", ".SH NAME", sub.Short, ".SH OPTIONS"} {
				if !strings.Contains(s, want) {
					t.Errorf("%s lacks %q", page, want)
				}
			}
			if sub.Example != "" && !strings.Contains(s, ".SH EXAMPLE") {
				t.Errorf("%s has no EXAMPLE section", page)
			}
			if strings.Contains(s, "Auto generated") {
				t.Errorf("%s has the generator's footer", page)
			}
			walk(sub)
		}
	}
	walk(newRootCmd())
	if n < 14 {
		t.Errorf("%d pages checked, want one per command", n)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rootswap.1")); err != nil || !strings.Contains(string(b), "rootswap-prepare(1)") {
		t.Errorf("rootswap.1 does not refer to rootswap-prepare(1): %v", err)
	}
}
