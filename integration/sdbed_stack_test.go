package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSdbedNspawnFileStack: the --nspawn-file path with a tree stored as
// layers, under a real systemd. systemd-nspawn@NAME.service's nspawn 252
// reads /var/lib/machines/NAME and cannot read a stack directory: the
// drop-in's prepare --link-machines mounts the current stack read-only at
// /run/rootswap/machines/NAME (an overlay whose source is the stack) and
// links that, so the payload runs, under the .nspawn file's
// Volatile=overlay, what the image holds; what it writes reaches no layer
// directory (the store check at the end verifies every one). A new image
// behind the tag is the next start's mount.
func TestSdbedNspawnFileStack(t *testing.T) {
	needIntegration(t)
	start := time.Now()
	reg := startRegistry(t, registryOpts{})
	script := func(v string) string {
		return "#!/bin/sh\ntrap 'exit 0' TERM\necho " + v + " > /etc/written-by-payload\nwhile true; do echo \"" + v + " $(date)\"; sleep 1; done\n"
	}
	src := "docker://" + pushImageAs(t, reg, payloadImage(t, script("stack-v1")), "rootswap-test/sdbed-stack:latest")
	b := bootBed(t)
	unit := b.installNspawnFile("app", map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--restart-sec", "1s", "app", src, "--", "/bin/sh", "/run.sh")
	says := func(v string) func(journalEntry) bool {
		return func(e journalEntry) bool { return strings.HasPrefix(e.Message, v+" ") }
	}
	b.ok("systemctl", "start", unit)
	b.waitJournal("stack-v1 lines", 2, 2*time.Minute, says("stack-v1"), "-u", unit)

	const mnt = "/run/rootswap/machines/app"
	if got := strings.TrimSpace(b.ok("readlink", "/var/lib/machines/app")); got != mnt {
		t.Errorf("/var/lib/machines/app points at %q, want %s", got, mnt)
	}
	digest := func() string {
		var ms []machineJSON
		if err := json.Unmarshal([]byte(b.rootswap("list", "--json")), &ms); err != nil || len(ms) != 1 {
			t.Fatalf("machines: %+v %v", ms, err)
		}
		return ms[0].Digest
	}
	mounted := func() string {
		return strings.TrimSpace(b.ok("findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", mnt))
	}
	tree := b.store + "/trees/sha256/" + strings.TrimPrefix(digest(), "sha256:")
	if got := mounted(); !strings.HasPrefix(got, "overlay "+tree+" ro") {
		t.Errorf("at %s: %q, want a read-only overlay of %s", mnt, got, tree)
	}

	src2 := "docker://" + pushImageAs(t, reg, payloadImage(t, script("stack-v2")), "rootswap-test/sdbed-stack:latest")
	if src2 != src {
		t.Fatalf("pushed to %s, then %s", src, src2)
	}
	b.ok("systemctl", "restart", unit)
	b.waitJournal("stack-v2 lines", 2, 2*time.Minute, says("stack-v2"), "-u", unit)
	tree2 := b.store + "/trees/sha256/" + strings.TrimPrefix(digest(), "sha256:")
	if tree2 == tree {
		t.Fatalf("the restart did not upgrade: %s", tree2)
	}
	if got := mounted(); !strings.HasPrefix(got, "overlay "+tree2+" ro") || strings.Contains(got, "\n") {
		t.Errorf("at %s after the upgrade: %q, want one read-only overlay of %s", mnt, got, tree2)
	}
	b.ok("systemctl", "stop", unit)
	if out, _ := b.run("find", b.store, "-name", "written-by-payload"); strings.TrimSpace(out) != "" {
		t.Errorf("the payload wrote into the store: %s", out)
	}
	b.rootswap("umount", mnt)
	t.Logf("whole test: %s", time.Since(start).Round(100*time.Millisecond))
}
