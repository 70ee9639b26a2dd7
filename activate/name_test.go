package activate

import (
	"errors"
	"strings"
	"testing"
)

// nameCases are the names systemd-nspawn 252 accepts for --machine and the
// ones it refuses ("Invalid machine name"): hostname_is_valid(name, 0) in
// systemd's src/basic/hostname-util.c. integration/names_test.go runs each
// accepted one under the real nspawn.
var nameCases = struct{ ok, bad []string }{
	ok: []string{"a", "0", "A9", "web-1", "a--b", "a.b", "a.b-c.d", "web.example.com",
		strings.Repeat("x", 64), strings.Repeat("a.", 31) + "bc"},
	bad: []string{
		"",          // empty
		"_x", "a_b", // underscore: not a letter, digit or hyphen
		"a.", "a..b", ".a", ".", "..", // empty labels, trailing dot
		"-a", "a-", "a.-b", "a-.b", // a label starts or ends with a hyphen
		".host",                 // machined's name for the host itself
		strings.Repeat("x", 65), // longer than HOST_NAME_MAX
		"a b", "a/b", "ä", "a\nb", "a:b", "a@b", "a%b",
	},
}

func TestValidName(t *testing.T) {
	for _, n := range nameCases.ok {
		if err := ValidName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range nameCases.bad {
		err := ValidName(n)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("%q: got %v, want ErrInvalidName", n, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error spans lines: %q", n, err)
		}
	}
}
