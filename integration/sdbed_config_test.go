package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// TestSdbedUnitRunsTheImage (issue 20 item 3): a unit written without
// `-- COMMAND` runs what the image says, read at each start: the
// entrypoint of the image the tag names now, after an upgrade that
// changed it too; `systemctl stop` gives the payload the image's
// STOPSIGNAL, as `docker stop` does (TestStopSignalAsDocker compares the
// two on the host).
func TestSdbedUnitRunsTheImage(t *testing.T) {
	needIntegration(t)
	v1 := probeImage(t, "FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\", \"v1\"]\nCMD [\"wait\"]\nSTOPSIGNAL SIGQUIT\nUSER 1234:5678\n", nil)
	v2 := probeImage(t, "FROM scratch\nCOPY probe /bin/probe2\nENTRYPOINT [\"/bin/probe2\", \"v2\"]\nCMD [\"wait\"]\nSTOPSIGNAL SIGINT\nWORKDIR /srv\n", nil)
	tag, retag := movingTag(t, "rootswap-test/sdbed-config")
	retag(v1)
	b := bootBed(t)
	unit := b.install("cfg", map[string]string{"stoppost.conf": stopPost}, "cfg", tag)
	if u := b.ok("systemctl", "cat", unit); strings.Contains(u, "probe") {
		t.Errorf("the unit names the image's command; it must read it at start:\n%s", u)
	}
	reports := func() []probeReport {
		var out []probeReport
		for _, e := range b.journal("-u", unit) {
			var r probeReport
			if strings.HasPrefix(e.Message, "{") && json.Unmarshal([]byte(e.Message), &r) == nil {
				out = append(out, r)
			}
		}
		return out
	}
	signals := func() []string {
		var out []string
		for _, e := range b.journal("-u", unit) {
			if strings.HasPrefix(e.Message, "signal ") {
				out = append(out, e.Message)
			}
		}
		return out
	}
	for i, want := range []struct {
		img    string
		argv   []string
		cwd    string
		uid    int
		signal string
	}{
		{v1, []string{"/probe", "v1", "wait"}, "/", 1234, "signal quit"},
		{v2, []string{"/bin/probe2", "v2", "wait"}, "/srv", 0, "signal interrupt"},
	} {
		retag(want.img)
		b.ok("systemctl", "start", unit)
		b.waitFor("the payload's report", 2*time.Minute, func() bool { return len(reports()) > i })
		r := reports()[i]
		if !slices.Equal(r.Args, want.argv) || r.Cwd != want.cwd || r.UID != want.uid {
			t.Errorf("start %d: argv %q cwd %s uid %d; want %q %s %d", i+1, r.Args, r.Cwd, r.UID, want.argv, want.cwd, want.uid)
		}
		b.waitJournal("up", i+1, 2*time.Minute, func(e journalEntry) bool { return e.Message == "up" }, "-u", unit)
		start := time.Now()
		b.ok("systemctl", "stop", unit)
		t.Logf("start %d: systemctl stop took %s", i+1, time.Since(start).Round(time.Millisecond))
		b.waitFor("the payload's signal line", time.Minute, func() bool { return len(signals()) > i })
		if got := signals()[i]; got != want.signal {
			t.Errorf("start %d: systemctl stop gave the payload %q, want %q (the image's STOPSIGNAL)", i+1, got, want.signal)
		}
	}
	if h := b.history("cfg"); h.Failures != 0 {
		t.Errorf("history: %+v", h)
	}
}

// TestSdbedNspawnFileRunsTheImage (issue 20 item 3, --nspawn-file): a
// `unit --nspawn-file` without `-- COMMAND` installs no .nspawn file in
// /etc/systemd/nspawn; its drop-in writes /run/systemd/nspawn/NAME.nspawn
// before each start from the current image, so systemd-nspawn@NAME runs
// the image's entrypoint as its user, in its working directory, and a
// stop gives it the image's STOPSIGNAL; after an upgrade that changes all
// of them, the restart runs the new ones.
func TestSdbedNspawnFileRunsTheImage(t *testing.T) {
	needIntegration(t)
	base, _ := testimage.Images(t)
	v1 := probeImage(t, "FROM "+base+"\nCOPY probe /probe\nENTRYPOINT [\"/probe\", \"v1\"]\nCMD [\"wait\"]\nSTOPSIGNAL SIGQUIT\nUSER 1234:5678\n", nil)
	v2 := probeImage(t, "FROM "+base+"\nCOPY probe /bin/probe2\nENTRYPOINT [\"/bin/probe2\", \"v2\"]\nCMD [\"wait\"]\nSTOPSIGNAL SIGINT\nWORKDIR /srv\nENV V=2\n", nil)
	tag, retag := movingTag(t, "rootswap-test/sdbed-nsfile-config")
	retag(v1)
	b := bootBed(t)
	unit := b.installNspawnFile("cfg", map[string]string{"stoppost.conf": stopPost}, "cfg", tag)
	if out, code := b.run("ls", "/etc/systemd/nspawn/cfg.nspawn"); code == 0 {
		t.Errorf("a static cfg.nspawn was installed: %s", out)
	}
	if u := b.ok("systemctl", "cat", unit); strings.Contains(u, "/probe") {
		t.Errorf("the drop-in names the image's command; it must be read at start:\n%s", u)
	}
	reports := func() []probeReport {
		var out []probeReport
		for _, e := range b.journal("-u", unit) {
			var r probeReport
			if strings.HasPrefix(e.Message, "{") && json.Unmarshal([]byte(e.Message), &r) == nil {
				out = append(out, r)
			}
		}
		return out
	}
	signals := func() []string {
		var out []string
		for _, e := range b.journal("-u", unit) {
			if strings.HasPrefix(e.Message, "signal ") {
				out = append(out, e.Message)
			}
		}
		return out
	}
	for i, want := range []struct {
		img    string
		argv   []string
		cwd    string
		uid    int
		env    string
		signal string
	}{
		{v1, []string{"/probe", "v1", "wait"}, "/", 1234, "", "signal quit"},
		{v2, []string{"/bin/probe2", "v2", "wait"}, "/srv", 0, "V=2", "signal interrupt"},
	} {
		retag(want.img)
		b.ok("systemctl", "start", unit)
		b.waitFor("the payload's report", 2*time.Minute, func() bool { return len(reports()) > i })
		r := reports()[i]
		if !slices.Equal(r.Args, want.argv) || r.Cwd != want.cwd || r.UID != want.uid || (want.env != "" && !slices.Contains(r.Env, want.env)) {
			t.Errorf("start %d: argv %q cwd %s uid %d env %q; want %q %s %d with %s", i+1, r.Args, r.Cwd, r.UID, r.Env, want.argv, want.cwd, want.uid, want.env)
		}
		t.Logf("start %d: /run/systemd/nspawn/cfg.nspawn:\n%s", i+1, b.ok("cat", "/run/systemd/nspawn/cfg.nspawn"))
		b.waitJournal("up", i+1, 2*time.Minute, func(e journalEntry) bool { return e.Message == "up" }, "-u", unit)
		start := time.Now()
		b.ok("systemctl", "stop", unit)
		t.Logf("start %d: systemctl stop took %s", i+1, time.Since(start).Round(time.Millisecond))
		b.waitFor("the payload's signal line", time.Minute, func() bool { return len(signals()) > i })
		if got := signals()[i]; got != want.signal {
			t.Errorf("start %d: systemctl stop gave the payload %q, want %q (the image's STOPSIGNAL)", i+1, got, want.signal)
		}
	}
	if h := b.history("cfg"); h.Failures != 0 {
		t.Errorf("history: %+v", h)
	}
}

// TestSdbedNspawnFileScratchCommand (issue 20 items 3 and 4 under
// --nspawn-file): an image built FROM scratch (no /usr), installed with
// `unit --nspawn-file … -- COMMAND`, runs under systemd-nspawn@NAME as
// the service would run it: prepare --link-machines lays run's shim over
// the tree where /var/lib/machines/NAME points (nspawn refuses a tree
// without /usr), and the drop-in's nspawn-settings merges the COMMAND
// with the image's config (COMMAND replaces CMD behind the ENTRYPOINT;
// the image's env, working directory, user and stop signal apply).
func TestSdbedNspawnFileScratchCommand(t *testing.T) {
	needIntegration(t)
	img := probeImage(t, "FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\", \"ep\"]\nCMD [\"c1\"]\nENV A=1\nWORKDIR /work\nUSER 1234:5678\nSTOPSIGNAL SIGQUIT\n", nil)
	b := bootBed(t)
	unit := b.installNspawnFile("scr", map[string]string{"stoppost.conf": stopPost}, "scr", img, "--", "c 2", "wait")
	if out, code := b.run("ls", "/etc/systemd/nspawn/scr.nspawn"); code == 0 {
		t.Errorf("a static scr.nspawn was installed: %s", out)
	}
	var r probeReport
	b.ok("systemctl", "start", unit)
	b.waitFor("the payload's report", 2*time.Minute, func() bool {
		for _, e := range b.journal("-u", unit) {
			if strings.HasPrefix(e.Message, "{") && json.Unmarshal([]byte(e.Message), &r) == nil {
				return true
			}
		}
		return false
	})
	t.Logf("/run/systemd/nspawn/scr.nspawn:\n%s", b.ok("cat", "/run/systemd/nspawn/scr.nspawn"))
	if want := []string{"/probe", "ep", "c 2", "wait"}; !slices.Equal(r.Args, want) || r.Cwd != "/work" || r.UID != 1234 || r.GID != 5678 || !slices.Contains(r.Env, "A=1") {
		t.Errorf("argv %q cwd %s uid %d gid %d env %q; want %q in /work as 1234:5678 with A=1", r.Args, r.Cwd, r.UID, r.GID, r.Env, want)
	}
	b.waitJournal("up", 1, 2*time.Minute, func(e journalEntry) bool { return e.Message == "up" }, "-u", unit)
	b.ok("systemctl", "stop", unit)
	b.waitJournal("the payload's signal line", 1, time.Minute, func(e journalEntry) bool { return e.Message == "signal quit" }, "-u", unit)
	if h := b.history("scr"); h.Failures != 0 {
		t.Errorf("history: %+v", h)
	}
}
