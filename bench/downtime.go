package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The downtime scenario (issue 18's benchmark): what a restart and an
// upgrade cost a service, measured as the longest silence in the output of
// a payload that prints a line every 20 ms, for Podman and for rootswap
// in the same rounds. Podman runs its container directly (conmon is its
// supervisor); rootswap's machine runs as rootswap-app.service under the
// systemd of the integration tests' bed (bed.go), booted by the bench, and
// `rootswap update` restarts it through that systemd's D-Bus API. Both
// payloads write into FIFOs on the host, where the bench stamps every line
// as it arrives: one probe for both.

const regimeDowntime = "Both services run the same payload, /bench/tick.sh of the image: `read v </bench/version`, then `echo tick $v >/ticks/fifo; sleep 0.02` in a loop, SIGTERM trapped to exit at once; " +
	"each FIFO is bind-mounted from the host, where the bench stamps every line as it arrives (as journald does under systemd). " +
	"Every upgrade is to an image that service has never had: FROM v2 plus a layer with the script and a new version file, pushed to the registry on 127.0.0.1 before the round. " +
	"Downtime is the longest gap between consecutive lines from 200 ms before the command to the 10th line of the expected version after it; " +
	"to serving is from the moment the new version is available (Podman: the start of its pull; rootswap: the tag moved, one manifest PUT) to its first line. " +
	"Podman 4.3.1 (its own --root; containers.conf with default_ulimits = [], cgroupfs, file events), the container run directly, no systemd on this host: " +
	"restart is `podman restart app`; upgrade is `podman pull NEW` (untimed for the downtime), then `podman stop app; podman rm app; podman run -d --name app … NEW`. " +
	"rootswap: the machine app as rootswap-app.service (`rootswap unit --install --healthy-after 1s --bind TICKS:/ticks app docker://127.0.0.1:PORT/REPO:live -- /bin/sh /bench/tick.sh`) " +
	"under the test bed's systemd (systemd-nspawn -b of the integration tests' Debian tree, --volatile=overlay, sharing the host's network), commands run in it with nsenter: " +
	"restart is `systemctl restart rootswap-app.service`; tag moved is today's path (the tag moves, then that restart, whose `prepare --pull` imports the new version while the service is down); " +
	"update is `rootswap update app` after the tag moved (import while the service runs, restart through D-Bus, health gate of 1 s). " +
	"The arms take turns going first."

// Downtime is the downtime scenario on one image.
type Downtime struct {
	Image  string `json:"image"`
	Regime string `json:"regime"`
	// Restart is `podman restart`, Upgrade the stop + rm + run of a new
	// version, pulled beforehand: each sample is one gap.
	Restart Stats `json:"restart"`
	Upgrade Stats `json:"upgrade"`
	// Ratio is the upgrade's median gap over the restart's.
	Ratio float64 `json:"ratio"`
	// PodmanServe is from the start of podman pull to the new version's
	// first line.
	PodmanServe *Stats `json:"podman_serve,omitempty"`
	// The rootswap arms, under the bed's systemd (nil when the bed is
	// missing; RootswapNA says why): gaps of a plain restart, of a
	// restart after the tag moved, and of rootswap update; the time from
	// the tag's move to the new version's first line for the last two;
	// and update's own run time (import, restart, gate).
	RootswapRestart *Stats `json:"rootswap_restart,omitempty"`
	RootswapMoved   *Stats `json:"rootswap_moved,omitempty"`
	RootswapUpdate  *Stats `json:"rootswap_update,omitempty"`
	MovedServe      *Stats `json:"moved_serve,omitempty"`
	UpdateServe     *Stats `json:"update_serve,omitempty"`
	UpdateRun       *Stats `json:"update_run,omitempty"`
	RootswapNA      string `json:"rootswap_na,omitempty"`
	// RestartPhases and UpdatePhases split the plain restarts' and the
	// updates' restarts by the unit's journal.
	RestartPhases *Phases `json:"restart_phases,omitempty"`
	UpdatePhases  *Phases `json:"update_phases,omitempty"`
	// AutoUpdate is what `podman auto-update` said when tried on the
	// container: why it is not an arm.
	AutoUpdate string `json:"auto_update,omitempty"`
	// TickMS is the median spacing of the payload's lines: the
	// measurement's resolution.
	TickMS float64 `json:"tick_ms"`
	// Order is which arm went first in each round: R (podman restart), U
	// (podman upgrade), S (systemctl restart), T (tag moved), D (update).
	Order string `json:"order"`
	Runs  int    `json:"runs"`
	Load  string `json:"load"`
}

// tickScript is the payload, /bench/tick.sh in every image of the
// scenario: it prints "tick VERSION" into the FIFO every 20 ms, VERSION
// read from the image, and ends on SIGTERM (sh as PID 1 ignores it
// otherwise).
const tickScript = "read v </bench/version\ntrap 'exit 0' TERM\nwhile true; do echo \"tick $v\" >/ticks/fifo; sleep 0.02; done\n"

// tickArgv runs the payload.
var tickArgv = []string{"/bin/sh", "/bench/tick.sh"}

// tickContext is the docker build context of the image that prints
// version: base plus /bench/tick.sh and /bench/version.
func tickContext(w io.Writer, base, version string) error {
	t := newTarWriter(w)
	for _, f := range []genFile{
		{name: "Dockerfile", data: []byte("FROM " + base + "\nCOPY bench /bench\n")},
		{name: "bench/tick.sh", data: []byte(tickScript)},
		{name: "bench/version", data: []byte(version + "\n")},
	} {
		if err := t.file(f, 0o644); err != nil {
			return err
		}
	}
	return t.close()
}

// tickImage builds (or finds) the image of set's v2 that prints version.
func tickImage(ctx context.Context, set *imageSet, version string) (string, error) {
	tag := tagFor(set.Name+"-tick-"+version, set.V2ID, tickScript)
	_, err := ensure(ctx, tag, func(w io.Writer) error { return tickContext(w, set.V2ID, version) },
		"build", "--network", "none", "--force-rm", "-q", "-t", tag, "-")
	return tag, err
}

// tick is one payload line, stamped when the bench read it.
type tick struct {
	at      time.Time
	version string
}

// ticker collects the lines of a FIFO.
type ticker struct {
	f    *os.File
	done chan struct{}

	mu    sync.Mutex
	ticks []tick
}

// openTicker creates the FIFO path and reads it until close. It opens the
// FIFO read-write so that the open does not wait for a writer and the
// reader sees no end of file between one payload and the next.
func openTicker(path string) (*ticker, error) {
	if err := syscall.Mkfifo(path, 0o666); err != nil {
		return nil, fmt.Errorf("mkfifo %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	t := &ticker{f: f, done: make(chan struct{})}
	go t.read(f)
	return t, nil
}

// read records every "tick VERSION" line of r with the time it arrived.
func (t *ticker) read(r io.Reader) {
	defer close(t.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "tick "); ok {
			now := time.Now()
			t.mu.Lock()
			t.ticks = append(t.ticks, tick{at: now, version: v})
			t.mu.Unlock()
		}
	}
}

func (t *ticker) close() {
	t.f.Close() // a FIFO is pollable: the blocked read returns
	select {
	case <-t.done:
	case <-time.After(5 * time.Second):
	}
}

func (t *ticker) snapshot() []tick {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.ticks)
}

// countAfter is how many lines of version arrived after after.
func countAfter(ticks []tick, version string, after time.Time) int {
	n := 0
	for _, tk := range ticks {
		if tk.version == version && tk.at.After(after) {
			n++
		}
	}
	return n
}

// wait waits up to limit until n lines of version have arrived after after.
func (t *ticker) wait(ctx context.Context, version string, after time.Time, n int, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for {
		if countAfter(t.snapshot(), version, after) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d lines \"tick %s\" within %s: %d arrived", n, version, limit, countAfter(t.snapshot(), version, after))
		case <-poll.C:
		}
	}
}

// longestGap is the longest interval between consecutive lines that
// arrived from from to to (any version).
func longestGap(ticks []tick, from, to time.Time) time.Duration {
	var gap time.Duration
	var prev time.Time
	for _, tk := range ticks {
		if tk.at.Before(from) || tk.at.After(to) {
			continue
		}
		if !prev.IsZero() && tk.at.Sub(prev) > gap {
			gap = tk.at.Sub(prev)
		}
		prev = tk.at
	}
	return gap
}

// tickSpacing is the median interval between consecutive lines.
func tickSpacing(ticks []tick) time.Duration {
	var ds []time.Duration
	for i := 1; i < len(ticks); i++ {
		ds = append(ds, ticks[i].at.Sub(ticks[i-1].at))
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// gapAfter runs do and returns the longest silence around it, once 10
// lines of want have arrived after it, and when the first line of want
// after do began arrived.
func (t *ticker) gapAfter(ctx context.Context, want string, do func() error) (time.Duration, time.Time, error) {
	start := time.Now()
	if err := do(); err != nil {
		return 0, time.Time{}, err
	}
	done := time.Now()
	if err := t.wait(ctx, want, done, 10, 2*time.Minute); err != nil {
		return 0, time.Time{}, err
	}
	ticks := t.snapshot()
	return longestGap(ticks, start.Add(-200*time.Millisecond), time.Now()), firstAfter(ticks, want, start), nil
}

// firstAfter is when the first line of version after after arrived, or
// the zero time.
func firstAfter(ticks []tick, version string, after time.Time) time.Time {
	for _, tk := range ticks {
		if tk.version == version && tk.at.After(after) {
			return tk.at
		}
	}
	return time.Time{}
}

// podman is one podman storage of the bench: its own --root, a runroot on
// /run (podman refuses one longer than 50 bytes) and the bench's
// containers.conf.
type podman struct {
	r    *runner
	base []string
	env  []string
	root string
	run  string
}

func newPodman(r *runner, dir, conf string) (*podman, error) {
	run, err := os.MkdirTemp("/run", "rootswap-bench-podman-")
	if err != nil {
		return nil, err
	}
	root := filepath.Join(dir, "root")
	return &podman{r: r, root: root, run: run, env: append(os.Environ(), "CONTAINERS_CONF="+conf),
		base: []string{"podman", "--root", root, "--runroot", filepath.Join(run, "run"),
			"--tmpdir", filepath.Join(run, "tmp"), "--storage-driver", "overlay"}}, nil
}

func (p *podman) do(ctx context.Context, args ...string) error {
	_, _, err := p.r.execEnv(ctx, p.env, append(slices.Clone(p.base), args...)...)
	return err
}

// cleanup removes every container of this storage, waits for the
// podman processes conmon starts when a container exits (`podman
// container cleanup`, with this --root), then unmounts the overlay
// driver's directory, which podman bind-mounts on itself and leaves
// mounted, and removes the runroot. Before it waited, a late cleanup
// process could mount the directory again after the unmount, and the
// series directory could not be removed.
func (p *podman) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.do(ctx, "rm", "-af"); err != nil {
		logf("  podman rm -af: %v", err)
	}
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for len(processesWith(p.root)) > 0 {
		select {
		case <-ctx.Done():
			logf("  podman processes still running on %s: %v", p.root, processesWith(p.root))
		case <-poll.C:
			continue
		}
		break
	}
	if err := syscall.Unmount(filepath.Join(p.root, "overlay"), syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		logf("  unmount podman's overlay directory: %v", err)
	}
	os.RemoveAll(p.run)
}

// processesWith lists the processes whose command line has s as one of
// its arguments.
func processesWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(cmdline), "\x00"), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// missingDowntimeTools names what the downtime scenario lacks ("" when
// nothing).
func missingDowntimeTools() string {
	var missing []string
	for _, t := range []string{"docker-registry", "podman"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return strings.Join(missing, ", ") + " not installed (scripts/bench.sh installs them)"
}

// publish builds the image of set that prints version, pushes it to the
// registry under the tag version and returns its manifest.
func (b *bench) publish(ctx context.Context, set *imageSet, version string) (*manifest, error) {
	img, err := tickImage(ctx, set, version)
	if err != nil {
		return nil, err
	}
	if err := b.reg.reg.push(ctx, img, pullRepo(set), version); err != nil {
		return nil, err
	}
	return b.reg.reg.manifest(ctx, pullRepo(set), version)
}

// downtime: the gap in a 20 ms ticker's output for Podman's restart and
// upgrade (pull beforehand, then stop + rm + run) and, in the same
// rounds, for rootswap's plain restart, restart after the tag moved and
// `rootswap update` under the bed's systemd.
func (b *bench) downtime(ctx context.Context, set *imageSet) error {
	if _, err := b.registrySetup(ctx, set); err != nil {
		return err
	}
	addr, repo := b.reg.reg.addr, pullRepo(set)
	// Every version the series upgrades to, built and pushed before it.
	versions := map[string]*manifest{}
	for _, v := range slices.Concat([]string{"r0", "au"}, roundVersions("u", b.runs), roundVersions("t", b.runs), roundVersions("d", b.runs)) {
		m, err := b.publish(ctx, set, v)
		if err != nil {
			return err
		}
		versions[v] = m
	}
	ref := func(v string) string { return addr + "/" + repo + ":" + v }
	return b.series(set.Name+"-downtime", func(dir string) error {
		// The bed first, so that podman's mounts are not copied into it.
		d := Downtime{Image: set.Name, Regime: regimeDowntime}
		rs, err := b.startRootswap(ctx, set, dir, versions["r0"])
		if err != nil {
			d.RootswapNA = err.Error()
			logf("  rootswap arms not measured: %v", err)
		} else {
			defer rs.stop()
		}
		ticks := filepath.Join(dir, "ticks")
		if err := os.Mkdir(ticks, 0o755); err != nil {
			return err
		}
		tk, err := openTicker(filepath.Join(ticks, "fifo"))
		if err != nil {
			return err
		}
		// Closed after the containers are gone: a payload writing to a
		// FIFO nobody reads would block in its open.
		defer tk.close()
		pm, err := newPodman(b.r, dir, b.reg.conf)
		if err != nil {
			return err
		}
		defer pm.cleanup()
		pull := func(v string) error { return pm.do(ctx, "pull", "-q", "--tls-verify=false", ref(v)) }
		start := func(v string) error {
			return pm.do(ctx, append([]string{"run", "-d", "--name", "app", "--network", "none", "-v", ticks + ":/ticks", ref(v)}, tickArgv...)...)
		}
		if err := pull("r0"); err != nil {
			return err
		}
		before := time.Now()
		if err := start("r0"); err != nil {
			return err
		}
		if err := tk.wait(ctx, "r0", before, 10, 2*time.Minute); err != nil {
			return fmt.Errorf("podman payload r0: %w", err)
		}
		d.AutoUpdate = pm.tryAutoUpdate(ctx, b.reg, repo, versions["r0"], versions["au"])
		logf("  podman auto-update: %s", d.AutoUpdate)

		cur := "r0"
		var restarts, upgrades, podServe []sample
		arms := []arm{{"R", func(int) error {
			g, _, err := tk.gapAfter(ctx, cur, func() error { return pm.do(ctx, "restart", "app") })
			restarts = append(restarts, sample{Wall: g})
			return err
		}}, {"U", func(i int) error {
			next := fmt.Sprintf("u%d", i)
			began := time.Now()
			if err := pull(next); err != nil {
				return err
			}
			g, first, err := tk.gapAfter(ctx, next, func() error {
				if err := pm.do(ctx, "stop", "app"); err != nil {
					return err
				}
				if err := pm.do(ctx, "rm", "app"); err != nil {
					return err
				}
				return start(next)
			})
			upgrades = append(upgrades, sample{Wall: g})
			podServe = append(podServe, sample{Wall: first.Sub(began)})
			cur = next
			return err
		}}}
		if rs != nil {
			arms = append(arms, rs.arms(ctx, versions)...)
		}
		order, err := b.rounds(0, arms...)
		if err != nil {
			return err
		}
		d.Order, d.Runs, d.Load = order, len(order), b.load+" → "+loadavg()
		d.Restart = newStats("podman restart app", restarts)
		d.Upgrade = newStats("podman pull NEW (untimed, before); podman stop app; podman rm app; podman run -d --name app … NEW", upgrades)
		d.Ratio = d.Upgrade.MedianMS / d.Restart.MedianMS
		d.PodmanServe = ptr(newStats("podman pull NEW; podman stop app; podman rm app; podman run -d --name app … NEW", podServe))
		d.TickMS = ms(tickSpacing(tk.snapshot()))
		logf("  downtime/%s: podman restart %s, stop + rm + run of a new version %s, tick %s",
			set.Name, fmtRange(&d.Restart), fmtRange(&d.Upgrade), fmtMS(d.TickMS))
		if rs != nil {
			rs.results(ctx, &d)
			logf("  downtime/%s: systemctl restart %s, tag moved + restart %s, rootswap update %s (tag moved → serving %s)",
				set.Name, fmtRange(d.RootswapRestart), fmtRange(d.RootswapMoved), fmtRange(d.RootswapUpdate), fmtRange(d.UpdateServe))
		}
		b.res.Downtime = append(b.res.Downtime, d)
		return nil
	})
}

func ptr[T any](v T) *T { return &v }

// roundVersions are the versions prefix0 … prefix(n-1).
func roundVersions(prefix string, n int) []string {
	var vs []string
	for i := range n {
		vs = append(vs, fmt.Sprintf("%s%d", prefix, i))
	}
	return vs
}

// tryAutoUpdate runs `podman auto-update` once on a container made for
// it (run from a tag, labelled for the registry policy and a systemd
// unit, as `podman generate systemd --new` would run it) after its tag
// moved to next, and returns what it said: podman's updates restart the
// container's systemd unit, and nothing here runs one.
func (p *podman) tryAutoUpdate(ctx context.Context, reg *registryState, repo string, from, next *manifest) string {
	conf := filepath.Join(p.run, "registries.conf")
	data := fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg.reg.addr)
	if err := os.WriteFile(conf, []byte(data), 0o644); err != nil {
		return "not tried: " + err.Error()
	}
	env := append(slices.Clone(p.env), "CONTAINERS_REGISTRIES_CONF="+conf)
	do := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, p.base[0], append(slices.Clone(p.base[1:]), args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	live := reg.reg.addr + "/" + repo + ":autoupdate"
	if err := reg.reg.tag(ctx, repo, "autoupdate", from); err != nil {
		return "not tried: " + err.Error()
	}
	if out, err := do("run", "-d", "--name", "autoupdate", "--network", "none",
		"--label", "io.containers.autoupdate=registry", "--label", "PODMAN_SYSTEMD_UNIT=container-autoupdate.service",
		live, "/bin/sleep", "3600"); err != nil {
		return fmt.Sprintf("not tried: podman run: %v: %s", err, lastLines(out, 3))
	}
	defer do("rm", "-f", "-t", "0", "autoupdate")
	if err := reg.reg.tag(ctx, repo, "autoupdate", next); err != nil {
		return "not tried: " + err.Error()
	}
	out, err := do("auto-update")
	if err == nil {
		return "`podman auto-update` exited 0: " + lastLines(out, 5)
	}
	return fmt.Sprintf("`podman auto-update` fails here (%v): %s", err, lastLines(out, 5))
}

// writeDowntime renders the downtime scenario.
func (r *Results) writeDowntime(b *strings.Builder) {
	if len(r.Downtime) == 0 {
		return
	}
	b.WriteString("\n## Downtime of a restart and an upgrade: rootswap under systemd beside Podman\n\n" +
		"Median (min–max) of the longest gap in the output of a payload printing a line every 20 ms (the resolution is the tick), " +
		"all arms in the same rounds of one run, one probe.\n\n" +
		"| image | podman restart | podman: pull, then stop + rm + run | systemctl restart (rootswap) | tag moved + restart (today) | `rootswap update` | update / systemctl restart | update / podman stop + rm + run | tick | runs (order) | load |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	na := func(s *Stats) string {
		if s == nil {
			return "n/a"
		}
		return fmtRange(s)
	}
	ratio := func(a, b *Stats) string {
		if a == nil || b == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", a.MedianMS/b.MedianMS)
	}
	for _, d := range r.Downtime {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d (%s) | %s |\n", d.Image, fmtRange(&d.Restart), fmtRange(&d.Upgrade),
			na(d.RootswapRestart), na(d.RootswapMoved), na(d.RootswapUpdate), ratio(d.RootswapUpdate, d.RootswapRestart), ratio(d.RootswapUpdate, &d.Upgrade),
			fmtMS(d.TickMS), d.Runs, d.Order, d.Load)
	}
	b.WriteString("\nFrom the new version available to its first line (median, min–max), and update's own run time (import, restart through D-Bus, 1 s health gate):\n\n" +
		"| image | podman: pull + stop + rm + run | tag moved + restart (today) | `rootswap update` | `rootswap update` runs |\n|---|---:|---:|---:|---:|\n")
	for _, d := range r.Downtime {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", d.Image, na(d.PodmanServe), na(d.MovedServe), na(d.UpdateServe), na(d.UpdateRun))
	}
	var rows []string
	for _, d := range r.Downtime {
		for _, p := range []struct {
			what string
			ph   *Phases
			gap  *Stats
		}{{"systemctl restart", d.RestartPhases, d.RootswapRestart}, {"`rootswap update`", d.UpdatePhases, d.RootswapUpdate}} {
			if p.ph != nil && p.gap != nil {
				rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s |\n", d.Image, p.what,
					fmtMS(p.ph.Stop.MedianMS), fmtMS(p.ph.Prepare.MedianMS), fmtMS(p.ph.Payload.MedianMS), fmtMS(p.gap.MedianMS)))
			}
		}
	}
	if len(rows) > 0 {
		b.WriteString("\nWhere rootswap's restart goes, from the unit's journal (medians): stop is systemd's Stopping → Stopped (SIGTERM, the payload's exit, nspawn's teardown, ExecStopPost), " +
			"prepare is Starting → Started (ExecStartPre, `rootswap prepare`: a cache hit), start is Started → the new payload's first line (nspawn, `rootswap run`, the init, sh):\n\n" +
			"| image | restart by | stop | prepare | start | gap |\n|---|---|---:|---:|---:|---:|\n" + strings.Join(rows, ""))
	}
	for _, d := range r.Downtime {
		if d.RootswapNA != "" {
			fmt.Fprintf(b, "\nrootswap arms on %s not measured: %s\n", d.Image, d.RootswapNA)
		}
	}
	if d := r.Downtime[0]; d.AutoUpdate != "" {
		fmt.Fprintf(b, "\nPodman's own updater, tried on a container labelled io.containers.autoupdate=registry: %s "+
			"It restarts the container's systemd unit through D-Bus, and no systemd runs on this host; "+
			"podman cannot run in the bed either (this host's cgroup v1 controllers are read-only under nspawn, so runc cannot create the container's cgroup, and --cgroups=disabled needs crun). "+
			"So Podman's arm is its manual equivalent: pull, then stop + rm + run.\n", d.AutoUpdate)
	}
	fmt.Fprintf(b, "\n%s\n", r.Downtime[0].Regime)
}

// downtimeTargets are issue 18's: update's downtime at most 1.2× a plain
// restart's and 0.5× Podman's stop + rm + run, and no larger for the big
// image than for the Debian one. A missed target quotes the floor: a
// plain restart of the same unit, which an update cannot beat.
func (r *Results) downtimeTargets(add func(name, want, measured string, pass *bool), notMeasured func(name, want, why string), verdict func(bool) *bool) {
	for _, d := range r.Downtime {
		name := func(what string) string { return "update's downtime vs " + what + ", " + d.Image }
		if d.RootswapUpdate == nil || d.RootswapRestart == nil {
			why := "the rootswap arms did not run"
			if d.RootswapNA != "" {
				why = d.RootswapNA
			}
			notMeasured(name("a plain restart"), "≤ 1.2×", why)
			notMeasured(name("Podman's stop + rm + run"), "≤ 0.5×", why)
			continue
		}
		u, p := d.RootswapUpdate.MedianMS, d.RootswapRestart.MedianMS
		add(name("a plain restart"), "≤ 1.2×", fmt.Sprintf("%.2f× (%s vs systemctl restart %s)", u/p, fmtMS(u), fmtMS(p)), verdict(u/p <= 1.2))
		pm := d.Upgrade.MedianMS
		measured := fmt.Sprintf("%.2f× (%s vs %s)", u/pm, fmtMS(u), fmtMS(pm))
		if u/pm > 0.5 {
			measured += fmt.Sprintf("; floor, a plain systemctl restart: %.2f× (%s)", p/pm, fmtMS(p))
		}
		add(name("Podman's stop + rm + run"), "≤ 0.5×", measured, verdict(u/pm <= 0.5))
	}
	var debian, big *Downtime
	for i, d := range r.Downtime {
		switch d.Image {
		case "debian":
			debian = &r.Downtime[i]
		case "big":
			big = &r.Downtime[i]
		}
	}
	const name, want = "update's downtime, big vs debian", "≤ 1.0×"
	if debian == nil || big == nil || debian.RootswapUpdate == nil || big.RootswapUpdate == nil {
		if len(r.Downtime) > 0 {
			notMeasured(name, want, "needs the debian and big images")
		}
		return
	}
	// The two series ran minutes apart, under whatever else the machine
	// did then: each update is set against the plain restarts of its own
	// series, and those ratios are compared.
	f := big.RootswapUpdate.MedianMS / debian.RootswapUpdate.MedianMS
	nb, nd := big.RootswapUpdate.MedianMS/big.RootswapRestart.MedianMS, debian.RootswapUpdate.MedianMS/debian.RootswapRestart.MedianMS
	add(name+" (each over its own series' plain restart)", want,
		fmt.Sprintf("%.2f× (big %.2f× its plain restart, debian %.2f×); unnormalised %.2f× (%s vs %s)",
			nb/nd, nb, nd, f, fmtMS(big.RootswapUpdate.MedianMS), fmtMS(debian.RootswapUpdate.MedianMS)), verdict(nb/nd <= 1))
}
