package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The downtime scenario (issue 18's benchmark, Podman's arm): what a
// restart costs a service run by podman directly, measured the way
// integration/sdbed_update_test.go measures rootswap's under systemd: the
// longest silence in the output of a payload that prints a line every
// 20 ms. The bench cannot boot the systemd bed, so rootswap's own numbers
// stay in that test; this gives the Podman figures to set beside them.

const regimeDowntime = "One podman --root per series (images pulled from the registry on 127.0.0.1; containers.conf with default_ulimits = [], cgroupfs, file events), " +
	"one container named app running `sh -c 'while true; do echo tick VERSION >/ticks/fifo; sleep 0.02; done'` with SIGTERM trapped to exit at once, " +
	"its FIFO bind-mounted from the host, where the bench stamps every line as it arrives (as journald does under systemd). " +
	"Downtime is the longest gap between consecutive lines from 200 ms before the command to the 10th line of the expected version after it. " +
	"Restart: `podman restart app` (same image). Upgrade: the other version pulled untimed beforehand (`podman pull`), then `podman stop app; podman rm app; podman run -d --name app …` of it; " +
	"it alternates v1 → v2 → v1, each switch an upgrade as far as podman can tell. The two arms alternate which goes first."

// Downtime is the downtime scenario on one image.
type Downtime struct {
	Image  string `json:"image"`
	Regime string `json:"regime"`
	// Restart is `podman restart`, Upgrade the stop + rm + run of the
	// other version, pulled beforehand: each sample is one gap.
	Restart Stats `json:"restart"`
	Upgrade Stats `json:"upgrade"`
	// Ratio is the upgrade's median gap over the restart's.
	Ratio float64 `json:"ratio"`
	// TickMS is the median spacing of the payload's lines: the
	// measurement's resolution.
	TickMS float64 `json:"tick_ms"`
	// Order is which arm went first in each round: R (restart) or U (upgrade).
	Order string `json:"order"`
	Runs  int    `json:"runs"`
	Load  string `json:"load"`
}

// tickPayload is the payload's command line for version: it prints
// "tick VERSION" into the FIFO every 20 ms and ends on SIGTERM (sh as PID
// 1 ignores it otherwise).
func tickPayload(version string) []string {
	return []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while true; do echo 'tick " + version + "' >/ticks/fifo; sleep 0.02; done"}
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
// lines of want have arrived after it.
func (t *ticker) gapAfter(ctx context.Context, want string, do func() error) (time.Duration, error) {
	start := time.Now()
	if err := do(); err != nil {
		return 0, err
	}
	done := time.Now()
	if err := t.wait(ctx, want, done, 10, 2*time.Minute); err != nil {
		return 0, err
	}
	return longestGap(t.snapshot(), start.Add(-200*time.Millisecond), time.Now()), nil
}

// podman is one podman storage of the bench: its own --root, a runroot on
// /run (podman refuses one longer than 50 bytes) and the bench's
// containers.conf.
type podman struct {
	r    *runner
	base []string
	env  []string
	run  string
}

func newPodman(r *runner, dir, conf string) (*podman, error) {
	run, err := os.MkdirTemp("/run", "rootswap-bench-podman-")
	if err != nil {
		return nil, err
	}
	return &podman{r: r, run: run, env: append(os.Environ(), "CONTAINERS_CONF="+conf),
		base: []string{"podman", "--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(run, "run"),
			"--tmpdir", filepath.Join(run, "tmp"), "--storage-driver", "overlay"}}, nil
}

func (p *podman) do(ctx context.Context, args ...string) error {
	_, _, err := p.r.execEnv(ctx, p.env, append(slices.Clone(p.base), args...)...)
	return err
}

// cleanup removes every container of this storage and its runroot.
func (p *podman) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.do(ctx, "rm", "-af"); err != nil {
		logf("  podman rm -af: %v", err)
	}
	os.RemoveAll(p.run)
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

// downtime: the gap in a 20 ms ticker's output for `podman restart` and
// for Podman's upgrade (pull beforehand, then stop + rm + run).
func (b *bench) downtime(ctx context.Context, set *imageSet) error {
	if _, err := b.registrySetup(ctx, set); err != nil {
		return err
	}
	addr, repo := b.reg.reg.addr, pullRepo(set)
	refs := map[string]string{"v1": addr + "/" + repo + ":v1", "v2": addr + "/" + repo + ":v2"}
	return b.series(set.Name+"-downtime", func(dir string) error {
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
		pull := func(v string) error { return pm.do(ctx, "pull", "-q", "--tls-verify=false", refs[v]) }
		start := func(v string) error {
			return pm.do(ctx, append([]string{"run", "-d", "--name", "app", "--network", "none", "-v", ticks + ":/ticks", refs[v]}, tickPayload(v)...)...)
		}
		if err := pull("v1"); err != nil {
			return err
		}
		before := time.Now()
		if err := start("v1"); err != nil {
			return err
		}
		if err := tk.wait(ctx, "v1", before, 10, 2*time.Minute); err != nil {
			return fmt.Errorf("payload v1: %w", err)
		}
		cur := "v1"
		var restarts, upgrades []sample
		order, err := b.rounds(0, arm{"R", func(int) error {
			g, err := tk.gapAfter(ctx, cur, func() error { return pm.do(ctx, "restart", "app") })
			restarts = append(restarts, sample{Wall: g})
			return err
		}}, arm{"U", func(int) error {
			next := map[string]string{"v1": "v2", "v2": "v1"}[cur]
			if err := pull(next); err != nil {
				return err
			}
			g, err := tk.gapAfter(ctx, next, func() error {
				if err := pm.do(ctx, "stop", "app"); err != nil {
					return err
				}
				if err := pm.do(ctx, "rm", "app"); err != nil {
					return err
				}
				return start(next)
			})
			upgrades = append(upgrades, sample{Wall: g})
			cur = next
			return err
		}})
		if err != nil {
			return err
		}
		d := Downtime{Image: set.Name, Regime: regimeDowntime, Order: order, Runs: len(order), Load: b.load + " → " + loadavg(),
			Restart: newStats("podman restart app", restarts),
			Upgrade: newStats("podman pull NEXT (untimed, before); podman stop app; podman rm app; podman run -d --name app … NEXT", upgrades),
			TickMS:  ms(tickSpacing(tk.snapshot()))}
		d.Ratio = d.Upgrade.MedianMS / d.Restart.MedianMS
		b.res.Downtime = append(b.res.Downtime, d)
		logf("  downtime/%s: podman restart %s, stop + rm + run of the other version %s, tick %s",
			set.Name, fmtRange(&d.Restart), fmtRange(&d.Upgrade), fmtMS(d.TickMS))
		return nil
	})
}

// writeDowntime renders the downtime scenario.
func (r *Results) writeDowntime(b *strings.Builder) {
	if len(r.Downtime) == 0 {
		return
	}
	b.WriteString("\n## Downtime of a restart and an upgrade under Podman\n\n" +
		"Median (min–max) of the longest gap in the output of a payload printing a line every 20 ms (the resolution is the tick). " +
		"Compare with rootswap's under the test bed's systemd (integration/sdbed_update_test.go, README \"Downtime of an upgrade under systemd\"): " +
		"a different harness, so set the ratios side by side rather than the absolute times.\n\n" +
		"| image | podman restart | pull beforehand, then stop + rm + run | ratio | tick | runs (order) | load |\n|---|---:|---:|---:|---:|---|---|\n")
	for _, d := range r.Downtime {
		fmt.Fprintf(b, "| %s | %s | %s | %.2f | %s | %d (%s) | %s |\n", d.Image, fmtRange(&d.Restart), fmtRange(&d.Upgrade), d.Ratio, fmtMS(d.TickMS), d.Runs, d.Order, d.Load)
	}
	fmt.Fprintf(b, "\n%s\n", r.Downtime[0].Regime)
}
