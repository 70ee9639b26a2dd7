// Package failpoint lets a test kill rootswap at a named step, so that
// every step of the publish order is crashed deterministically, whatever
// the machine's speed. (bbolt's gofail failpoints do the same.)
//
// ROOTSWAP_FAILPOINT names the armed points, separated by commas. It is
// read once, when the process starts. Hit of an armed point writes one line
// "rootswap: failpoint NAME" to stderr and sends SIGKILL to the process
// itself: the crash is real, no deferred function, cleanup or buffered
// write runs. Unset, Hit costs one comparison.
package failpoint

import (
	"os"
	"strings"
	"syscall"
	"time"
)

// Env is the variable that arms failpoints.
const Env = "ROOTSWAP_FAILPOINT"

var armed = parse(os.Getenv(Env))

func parse(v string) map[string]bool {
	var m map[string]bool
	for _, name := range strings.Split(v, ",") {
		if name = strings.TrimSpace(name); name != "" {
			if m == nil {
				m = map[string]bool{}
			}
			m[name] = true
		}
	}
	return m
}

// Hit kills the process with SIGKILL if ROOTSWAP_FAILPOINT names name.
func Hit(name string) {
	if armed == nil || !armed[name] {
		return
	}
	os.Stderr.WriteString("rootswap: failpoint " + name + "\n")
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Hour) // SIGKILL is delivered before this returns
}
