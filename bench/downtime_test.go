package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
// FIFO of the test: it ticks, and SIGTERM ends it with status 0 (what
// podman stop waits for).
func TestTickPayload(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	tk, err := openTicker(fifo)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.close()
	argv := tickPayload("v7")
	if argv[0] != "/bin/sh" || argv[1] != "-c" || !strings.Contains(argv[2], "/ticks/fifo") {
		t.Fatalf("payload %q", argv)
	}
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(argv[2], "/ticks/fifo", fifo))
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
	r.Downtime = []Downtime{{Image: "quick", Regime: regimeDowntime, Runs: 3, Order: "RUR", Ratio: 2.5,
		Restart: newStats("podman restart app", []sample{{Wall: 400 * time.Millisecond}, {Wall: 410 * time.Millisecond}, {Wall: 390 * time.Millisecond}}),
		Upgrade: newStats("stop + rm + run", []sample{{Wall: time.Second}, {Wall: 1100 * time.Millisecond}, {Wall: 900 * time.Millisecond}}),
		TickMS:  21.5}}
	r.writeDowntime(&b)
	want := "| quick | 400 ms (390 ms–410 ms) | 1.00 s (900 ms–1.10 s) | 2.50 | 21.5 ms | 3 (RUR) |"
	if !strings.Contains(b.String(), want) {
		t.Errorf("rendered\n%s\nwant a row %q", b.String(), want)
	}
}
