package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLongestGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int, v string) tick { return tick{at: t0.Add(time.Duration(ms) * time.Millisecond), version: v} }
	ticks := []tick{at(0, "v1"), at(20, "v1"), at(40, "v1"), at(900, "v1"), // a gap of 860 ms before the window
		at(1000, "v1"), at(1020, "v1"), at(1330, "v2"), at(1350, "v2"), at(1370, "v2")}
	from, to := t0.Add(950*time.Millisecond), t0.Add(2*time.Second)
	if g := longestGap(ticks, from, to); g != 310*time.Millisecond {
		t.Errorf("longestGap in [950 ms, 2 s] = %v, want 310ms (1020 → 1330 across versions)", g)
	}
	if g := longestGap(ticks, t0, to); g != 860*time.Millisecond {
		t.Errorf("longestGap of all = %v, want 860ms", g)
	}
	if g := longestGap(ticks[:1], t0, to); g != 0 {
		t.Errorf("longestGap of one line = %v, want 0", g)
	}
	if s := tickSpacing(ticks[:3]); s != 20*time.Millisecond {
		t.Errorf("tickSpacing = %v, want 20ms", s)
	}
	if n := countAfter(ticks, "v2", t0.Add(1340*time.Millisecond)); n != 2 {
		t.Errorf("countAfter v2 = %d, want 2", n)
	}
}

// TestTickerAcrossWriters: the ticker keeps reading after one writer
// closes the FIFO and another opens it (a stopped payload and its
// successor), and ignores lines that are not ticks.
func TestTickerAcrossWriters(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	tk, err := openTicker(fifo)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.close()
	start := time.Now()
	for _, lines := range []string{"tick v1\nnoise\ntick v1\n", "tick v2\ntick v2\ntick v2\n"} {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteString(lines); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	ctx := context.Background()
	if err := tk.wait(ctx, "v2", start, 3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got := tk.snapshot()
	var vs []string
	for _, x := range got {
		vs = append(vs, x.version)
	}
	if strings.Join(vs, ",") != "v1,v1,v2,v2,v2" {
		t.Errorf("ticks %v, want v1,v1,v2,v2,v2", vs)
	}
	err = tk.wait(ctx, "v3", start, 1, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `"tick v3"`) {
		t.Errorf("wait for a version that never prints: %v, want an error naming it", err)
	}
}

// TestTickPayload runs the payload's script with the host's sh against a
// FIFO of the test: it ticks with the version read from its file, and SIGTERM ends it with status 0 (what
// podman stop waits for).
func TestTickPayload(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	tk, err := openTicker(fifo)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.close()
	ver := filepath.Join(dir, "version")
	if err := os.WriteFile(ver, []byte("v7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if tickArgv[0] != "/bin/sh" || tickArgv[1] != "/bench/tick.sh" || !strings.Contains(tickScript, "/ticks/fifo") || !strings.Contains(tickScript, "</bench/version") {
		t.Fatalf("payload %q: %q", tickArgv, tickScript)
	}
	script := strings.NewReplacer("/ticks/fifo", fifo, "/bench/version", ver).Replace(tickScript)
	cmd := exec.Command("sh", "-c", script)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	ctx := context.Background()
	if err := tk.wait(ctx, "v7", start, 5, 30*time.Second); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	if s := tickSpacing(tk.snapshot()); s < 20*time.Millisecond {
		t.Errorf("tick spacing %v, want at least the 20 ms sleep", s)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("payload after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("payload still runs 30 s after SIGTERM")
	}
}

func TestWriteDowntime(t *testing.T) {
	var r Results
	var b strings.Builder
	r.writeDowntime(&b)
	if b.Len() != 0 {
		t.Errorf("no downtime series rendered %q", b.String())
	}
	st := func(command string, msecs ...int) *Stats {
		var ss []sample
		for _, m := range msecs {
			ss = append(ss, sample{Wall: time.Duration(m) * time.Millisecond})
		}
		return ptr(newStats(command, ss))
	}
	r.Downtime = []Downtime{{Image: "quick", Regime: regimeDowntime, Runs: 3, Order: "RUS", Ratio: 2.5,
		Restart: *st("podman restart app", 400, 410, 390), Upgrade: *st("stop + rm + run", 1000, 1100, 900),
		RootswapRestart: st("systemctl restart", 300, 310, 290), RootswapMoved: st("tag moved", 600, 700, 500),
		RootswapUpdate: st("update", 330, 340, 320), UpdateServe: st("serve", 800, 900, 700),
		RestartPhases: &Phases{Stop: *st("stop", 100), Prepare: *st("prepare", 20), Payload: *st("payload", 150)},
		AutoUpdate:    "`podman auto-update` fails here: dial unix /run/systemd/private",
		TickMS:        21.5}, {Image: "big", Regime: regimeDowntime, Runs: 3, Order: "RUS",
		Restart: *st("podman restart app", 400), Upgrade: *st("stop + rm + run", 1000), RootswapNA: "no systemd test bed"},
		{Image: "slow", Restart: *st("podman restart app", 400), Upgrade: *st("stop + rm + run", 1000),
			RootswapRestart: st("systemctl restart", 600), RootswapUpdate: st("update", 800)}}
	r.writeDowntime(&b)
	for _, want := range []string{
		"| quick | 400 ms (390 ms–410 ms) | 1.00 s (900 ms–1.10 s) | 300 ms (290 ms–310 ms) | 600 ms (500 ms–700 ms) | 330 ms (320 ms–340 ms) | 1.10 | 0.33 | 21.5 ms | 3 (RUS) |",
		"| big | 400 ms (400 ms–400 ms) | 1.00 s (1.00 s–1.00 s) | n/a | n/a | n/a | n/a | n/a |",
		"| quick | n/a | n/a | 800 ms (700 ms–900 ms) | n/a |",
		"rootswap arms on big not measured: no systemd test bed",
		"| quick | systemctl restart | 100 ms | 20.0 ms | 150 ms | 300 ms |",
		"dial unix /run/systemd/private",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("rendered\n%s\nwant %q", b.String(), want)
		}
	}
	r.Downtime = append(r.Downtime, Downtime{Image: "debian", RootswapRestart: st("", 500), RootswapUpdate: st("", 500)},
		Downtime{Image: "big", RootswapRestart: st("", 600), RootswapUpdate: st("", 540)})
	r.Config.Images = []string{"quick"}
	r.evaluate()
	var got []string
	for _, tg := range r.Targets {
		got = append(got, fmt.Sprintf("%s %s %s", tg.verdict(), tg.Name, tg.Measured))
	}
	for _, want := range []string{
		"PASS update's downtime vs a plain restart, quick 1.10× (330 ms vs systemctl restart 300 ms)",
		"PASS update's downtime vs Podman's stop + rm + run, quick 0.33× (330 ms vs 1.00 s)",
		"n/a update's downtime vs a plain restart, big not measured: no systemd test bed",
		"MISS update's downtime vs a plain restart, slow 1.33× (800 ms vs systemctl restart 600 ms)",
		"PASS update's downtime, big vs debian (each over its own series' plain restart) 0.90× (big 0.90× its plain restart, debian 1.00×); unnormalised 1.08× (540 ms vs 500 ms)",
		"MISS update's downtime vs Podman's stop + rm + run, slow 0.80× (800 ms vs 1.00 s); floor, a plain systemctl restart: 0.60× (600 ms)",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("targets:\n%s\nwant %q", strings.Join(got, "\n"), want)
		}
	}
}

// TestPhases: a restart is split at the unit's Stopping, Stopped, Starting
// and Started messages inside its window and the payload's first line
// after Started; a window missing one of them is left out.
func TestPhases(t *testing.T) {
	t0 := time.Unix(2000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ev := map[string][]time.Time{
		"Stopping": {at(10), at(5010)},
		"Stopped":  {at(110), at(5210)},
		"Starting": {at(120), at(5220)},
		"Started":  {at(150), at(5300)},
	}
	ticks := []tick{{at(0), "r0"}, {at(400), "r0"}, {at(5000), "d0"}, {at(5700), "d1"}, {at(9000), "x"}}
	wins := []window{{at(0), at(1000), "r0"}, {at(5000), at(6000), "d1"}, {at(8000), at(9500), "x"}}
	p := phases(ev, ticks, wins)
	if p == nil || len(p.Stop.SamplesMS) != 2 {
		t.Fatalf("phases %+v, want two restarts (the third window has no journal entries)", p)
	}
	if got := [][]float64{p.Stop.SamplesMS, p.Prepare.SamplesMS, p.Payload.SamplesMS}; fmt.Sprint(got) != "[[100 200] [30 80] [250 400]]" {
		t.Errorf("phases %v, want stop [100 200], prepare [30 80], payload [250 400]", got)
	}
	if phases(ev, ticks, wins[2:]) != nil {
		t.Errorf("phases of a window without journal entries are not nil")
	}
}

// TestProcessesWith finds a process by one of its arguments, and no longer
// once it has exited.
func TestProcessesWith(t *testing.T) {
	arg := filepath.Join(t.TempDir(), "root")
	cmd := exec.Command("sh", "-c", "sleep 30", arg) // arg is the shell's $0
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if got := processesWith(arg); !slices.Equal(got, []int{cmd.Process.Pid}) {
		t.Errorf("processesWith(%s) = %v, want [%d]", arg, got, cmd.Process.Pid)
	}
	if got := processesWith(arg[:len(arg)-1]); len(got) != 0 {
		t.Errorf("a prefix of the argument matched %v", got)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if got := processesWith(arg); len(got) != 0 {
		t.Errorf("processesWith after the exit = %v", got)
	}
}
