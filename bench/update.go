package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The rootswap side of the downtime scenario: machine app, run by
// rootswap-app.service under the bed's systemd, following the tag live of
// the set's repository in the registry on 127.0.0.1 (the bed shares the
// host's network).

const (
	rsMachine = "app"
	rsUnit    = "rootswap-app.service"
	rsTag     = "live"
)

// rootswapArm is the booted bed, its store and the payload's ticker.
type rootswapArm struct {
	b     *bench
	set   *imageSet
	bed   *bed
	store string
	tk    *ticker
	cur   string // the version the unit runs

	restarts, moved, updates, movedServe, updateServe, updateRun []sample
	// The S and D measurements' windows, split into phases afterwards.
	restartWins, updateWins []window
}

// window is one measured restart: from its command's start to the 10th
// line of version after it.
type window struct {
	from, to time.Time
	version  string
}

// startRootswap boots the bed, installs and starts the unit on version
// r0, and returns once its payload prints; an error says why the rootswap
// arms cannot run.
func (b *bench) startRootswap(ctx context.Context, set *imageSet, dir string, r0 *manifest) (*rootswapArm, error) {
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		return nil, fmt.Errorf("systemd-nspawn not found")
	}
	tree, err := bedTree()
	if err != nil {
		return nil, err
	}
	rs, err := filepath.Abs(b.r.rs)
	if err != nil {
		return nil, err
	}
	a := &rootswapArm{b: b, set: set, store: filepath.Join(dir, "store")}
	ticks := filepath.Join(dir, "rs-ticks")
	for _, d := range []string{a.store, ticks} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if a.tk, err = openTicker(filepath.Join(ticks, "fifo")); err != nil {
		return nil, err
	}
	start := time.Now()
	if a.bed, err = bootBed(ctx, tree, rs, filepath.Join(dir, "bed-console"), a.store, ticks); err != nil {
		a.tk.close()
		return nil, err
	}
	logf("  bed: %s booted in %s", tree, time.Since(start).Round(10*time.Millisecond))
	fail := func(err error) (*rootswapArm, error) {
		out, _ := a.bed.cmd(ctx, "journalctl", "-u", rsUnit, "--no-pager", "-n", "20").CombinedOutput()
		a.stop()
		return nil, fmt.Errorf("%w; journal: %s", err, lastLines(string(out), 20))
	}
	if err := b.reg.reg.tag(ctx, pullRepo(set), rsTag, r0); err != nil {
		return fail(err)
	}
	image := "docker://" + b.reg.reg.addr + "/" + pullRepo(set) + ":" + rsTag
	steps := [][]string{
		{"/usr/local/bin/rootswap", "--root", a.store, "unit", "--install", "--unit-dir", "/etc/systemd/system",
			"--healthy-after", "1s", "--restart-sec", "1s", "--stop-timeout", "5s", "--bind", ticks + ":/ticks",
			rsMachine, image, "--"},
		{"mkdir", "-p", "/etc/systemd/system/" + rsUnit + ".d"},
		// Many restarts in a row are the point here.
		{"sh", "-c", "printf '[Unit]\\nStartLimitIntervalSec=0\\n' >/etc/systemd/system/" + rsUnit + ".d/nolimit.conf"},
		{"systemctl", "daemon-reload"},
		{"systemctl", "start", rsUnit},
	}
	steps[0] = append(steps[0], tickArgv...)
	before := time.Now()
	for _, s := range steps {
		if _, _, err := b.r.exec(ctx, a.bed.argv(s...)...); err != nil {
			return fail(err)
		}
	}
	if err := a.tk.wait(ctx, "r0", before, 10, 2*time.Minute); err != nil {
		return fail(fmt.Errorf("rootswap payload r0: %w", err))
	}
	a.cur = "r0"
	return a, nil
}

// stop powers the bed off (the unit stops with it) and closes the ticker.
func (a *rootswapArm) stop() {
	a.bed.shutdown()
	a.tk.close()
}

// inBed runs args in the bed.
func (a *rootswapArm) inBed(ctx context.Context, args ...string) func() error {
	return func() error {
		_, _, err := a.b.r.exec(ctx, a.bed.argv(args...)...)
		return err
	}
}

// arms are S (systemctl restart, same version), T (the tag moves to tN,
// then systemctl restart: today's path) and D (the tag moves to dN, then
// rootswap update).
func (a *rootswapArm) arms(ctx context.Context, versions map[string]*manifest) []arm {
	restart := a.inBed(ctx, "systemctl", "restart", rsUnit)
	moveTo := func(next string, gaps, serves *[]sample, do func() error) error {
		if err := a.b.reg.reg.tag(ctx, pullRepo(a.set), rsTag, versions[next]); err != nil {
			return err
		}
		available := time.Now()
		g, first, err := a.tk.gapAfter(ctx, next, do)
		if err != nil {
			return err
		}
		*gaps = append(*gaps, sample{Wall: g})
		*serves = append(*serves, sample{Wall: first.Sub(available)})
		a.cur = next
		return nil
	}
	return []arm{{"S", func(int) error {
		from := time.Now()
		g, _, err := a.tk.gapAfter(ctx, a.cur, restart)
		a.restarts = append(a.restarts, sample{Wall: g})
		a.restartWins = append(a.restartWins, window{from, time.Now(), a.cur})
		return err
	}}, {"T", func(i int) error {
		return moveTo(fmt.Sprintf("t%d", i), &a.moved, &a.movedServe, restart)
	}}, {"D", func(i int) error {
		from, next := time.Now(), fmt.Sprintf("d%d", i)
		defer func() { a.updateWins = append(a.updateWins, window{from, time.Now(), next}) }()
		return moveTo(next, &a.updates, &a.updateServe, func() error {
			s, out, err := a.b.r.exec(ctx, a.bed.argv("/usr/local/bin/rootswap", "--root", a.store, "update", rsMachine)...)
			if err != nil {
				return err
			}
			if !strings.Contains(out, rsUnit+" restarted") {
				return fmt.Errorf("rootswap update %s did not restart %s: %s", rsMachine, rsUnit, lastLines(out, 3))
			}
			a.updateRun = append(a.updateRun, s)
			return nil
		})
	}}}
}

// Phases split restarts of the unit by its journal: Stop is systemd's
// "Stopping" to "Stopped" (SIGTERM, the payload's exit, nspawn's teardown,
// ExecStopPost), Prepare "Starting" to "Started" (ExecStartPre: prepare,
// a cache hit), Payload "Started" to the new payload's first line (nspawn,
// rootswap run, the init, sh).
type Phases struct {
	Stop    Stats `json:"stop"`
	Prepare Stats `json:"prepare"`
	Payload Stats `json:"payload"`
}

// journalEntry is one entry of journalctl -o json.
type journalEntry struct {
	Message  string `json:"MESSAGE"`
	Realtime string `json:"__REALTIME_TIMESTAMP"`
}

// unitEvents returns the times of the unit's systemd messages that start
// with each of prefixes, read from the bed's journal.
func (a *rootswapArm) unitEvents(ctx context.Context, prefixes ...string) (map[string][]time.Time, error) {
	out, err := a.bed.cmd(ctx, "journalctl", "-u", rsUnit, "--no-pager", "-o", "json", "--output-fields=MESSAGE,__REALTIME_TIMESTAMP").Output()
	if err != nil {
		return nil, fmt.Errorf("journalctl -u %s: %w", rsUnit, err)
	}
	ev := map[string][]time.Time{}
	for _, line := range strings.Split(string(out), "\n") {
		var e journalEntry
		if json.Unmarshal([]byte(line), &e) != nil {
			continue // a MESSAGE that is not UTF-8 comes as bytes: not systemd's
		}
		us, err := strconv.ParseInt(e.Realtime, 10, 64)
		if err != nil {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(e.Message, p+" "+rsUnit) {
				ev[p] = append(ev[p], time.UnixMicro(us))
			}
		}
	}
	return ev, nil
}

// phases splits each window's restart; nil if the journal cannot say.
func phases(ev map[string][]time.Time, ticks []tick, wins []window) *Phases {
	in := func(kind string, w window, after time.Time) time.Time {
		for _, t := range ev[kind] {
			if !t.Before(after) && t.Before(w.to) {
				return t
			}
		}
		return time.Time{}
	}
	var stop, prep, pay []sample
	for _, w := range wins {
		stopping := in("Stopping", w, w.from)
		stopped := in("Stopped", w, stopping)
		starting := in("Starting", w, stopped)
		started := in("Started", w, starting)
		first := firstAfter(ticks, w.version, started)
		if stopping.IsZero() || stopped.IsZero() || starting.IsZero() || started.IsZero() || first.IsZero() {
			continue
		}
		stop = append(stop, sample{Wall: stopped.Sub(stopping)})
		prep = append(prep, sample{Wall: started.Sub(starting)})
		pay = append(pay, sample{Wall: first.Sub(started)})
	}
	if len(stop) == 0 {
		return nil
	}
	return &Phases{Stop: newStats("Stopping → Stopped", stop), Prepare: newStats("Starting → Started (ExecStartPre)", prep),
		Payload: newStats("Started → the payload's first line", pay)}
}

// results fills in d's rootswap arms.
func (a *rootswapArm) results(ctx context.Context, d *Downtime) {
	d.RootswapRestart = ptr(newStats("systemctl restart "+rsUnit, a.restarts))
	d.RootswapMoved = ptr(newStats("tag moved; systemctl restart "+rsUnit+" (its prepare --pull imports the new version)", a.moved))
	d.RootswapUpdate = ptr(newStats("tag moved; rootswap update "+rsMachine, a.updates))
	d.MovedServe = ptr(newStats("tag moved → the new version's first line, systemctl restart", a.movedServe))
	d.UpdateServe = ptr(newStats("tag moved → the new version's first line, rootswap update", a.updateServe))
	d.UpdateRun = ptr(newStats("rootswap update "+rsMachine+" (import, restart, 1 s health gate)", a.updateRun))
	d.TickMS = min(d.TickMS, ms(tickSpacing(a.tk.snapshot())))
	ev, err := a.unitEvents(ctx, "Stopping", "Stopped", "Starting", "Started")
	if err != nil {
		logf("  no phases: %v", err)
		return
	}
	ticks := a.tk.snapshot()
	d.RestartPhases, d.UpdatePhases = phases(ev, ticks, a.restartWins), phases(ev, ticks, a.updateWins)
}
