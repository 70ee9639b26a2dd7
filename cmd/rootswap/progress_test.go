package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// screen is a terminal of fixed width for the progress tests: it
// interprets what progress writes ("\r", "\n", ESC[nA, ESC[J, ESC[K) and
// wraps, as a terminal does, a line that reaches the last column.
type screen struct {
	mu    sync.Mutex
	width int
	rows  [][]rune
	r, c  int
	raw   strings.Builder
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw.Write(p)
	in := []rune(string(p))
	for i := 0; i < len(in); i++ {
		for len(s.rows) <= s.r {
			s.rows = append(s.rows, nil)
		}
		switch ch := in[i]; {
		case ch == '\r':
			s.c = 0
		case ch == '\n':
			s.r, s.c = s.r+1, 0
		case ch == 0x1b && i+1 < len(in) && in[i+1] == '[':
			j := i + 2
			for j < len(in) && in[j] >= '0' && in[j] <= '9' {
				j++
			}
			n, _ := strconv.Atoi(string(in[i+2 : j]))
			switch in[j] {
			case 'A':
				s.r = max(0, s.r-max(n, 1))
			case 'J':
				s.rows[s.r] = s.rows[s.r][:min(s.c, len(s.rows[s.r]))]
				s.rows = s.rows[:s.r+1]
			case 'K':
				s.rows[s.r] = s.rows[s.r][:min(s.c, len(s.rows[s.r]))]
			}
			i = j
		default:
			if s.c == s.width { // wrap
				s.r, s.c = s.r+1, 0
				for len(s.rows) <= s.r {
					s.rows = append(s.rows, nil)
				}
			}
			row := s.rows[s.r]
			for len(row) <= s.c {
				row = append(row, ' ')
			}
			row[s.c] = ch
			s.rows[s.r], s.c = row, s.c+1
		}
	}
	return len(p), nil
}

func (s *screen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for _, r := range s.rows {
		lines = append(lines, strings.TrimRight(string(r), " "))
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// TestProgressLineFitsAndCountsBytes: a flattened import's line shows
// files, bytes and rate, and never reaches the last column.
func TestProgressLineFitsAndCountsBytes(t *testing.T) {
	if got := progressLine("web:1", 12_345_678, 321, 2*time.Second, 200); !strings.Contains(got, "12.3 MB") || !strings.Contains(got, "321 files") || !strings.Contains(got, "6.2 MB/s") {
		t.Errorf("wide line %q", got)
	}
	for _, w := range []int{1, 2, 10, 40} {
		if got := progressLine("registry.example/a/very/long/image:tag", 1<<40, 1e6, time.Hour, w); utf8.RuneCountInString(got) > max(w-1, 0) {
			t.Errorf("width %d: line %q is %d wide", w, got, utf8.RuneCountInString(got))
		}
	}
}

// layeredImport drives a progress as a layered import of three blobs
// does (one of five layers skipped... two in the store), with byte
// counts the test moves.
func layeredImport(p *progress) []*atomic.Int64 {
	sizes := []int64{45_600_000, 1_000_000, 80_000_000}
	var fetch []snapshot.LayerFetch
	for i, s := range sizes {
		fetch = append(fetch, snapshot.LayerFetch{DiffID: digest.FromString(fmt.Sprint("diff", i)), Blob: digest.FromString(fmt.Sprint("blob", i)), Size: s})
	}
	p.Layers(fetch, 2)
	counts := make([]*atomic.Int64, len(sizes))
	for k := range sizes {
		counts[k] = new(atomic.Int64)
		p.Fetching(k, counts[k].Load)
	}
	return counts
}

// TestProgressShowsEachBlob: a layered import shows each blob being
// fetched as downloaded bytes of its size and a percentage, a summary of
// all, a line for each blob done and one for the layers skipped; every
// line fits the terminal down to 40 columns, and Done leaves only the
// permanent lines.
func TestProgressShowsEachBlob(t *testing.T) {
	for _, width := range []int{120, 80, 40} {
		t.Run(strconv.Itoa(width), func(t *testing.T) {
			scr := &screen{width: width}
			area := &statusArea{w: scr, width: func() int { return width }}
			start := time.Now()
			var now atomic.Int64
			p := &progress{area: area, what: "docker://registry.example/team/web:1.2.3", now: func() time.Time { return start.Add(time.Duration(now.Load())) }}
			counts := layeredImport(p)
			counts[0].Store(12_300_000)
			counts[2].Store(800_000)
			now.Store(int64(4 * time.Second))
			p.draw()
			got := scr.text()
			blob0 := digest.FromString("blob0").Encoded()
			for _, want := range []string{"2 of 5 layers in the store: skipped", blob0[:8], "12.3 MB", "45.6 MB 26%", "800.0 kB", "80.0 MB 1%", "4s"} {
				if !strings.Contains(got, want) {
					t.Errorf("screen lacks %q:\n%s", want, got)
				}
			}
			for _, l := range strings.Split(got, "\n") {
				if utf8.RuneCountInString(l) >= width {
					t.Errorf("line %q reaches column %d", l, width)
				}
			}
			if n := strings.Count(got, "\n") + 1; n != 5 { // skipped, three blobs, summary
				t.Errorf("%d lines, want 5:\n%s", n, got)
			}
			counts[1].Store(1_000_000)
			p.Fetched(1, nil)
			p.Fetched(0, errors.New("cut short"))
			p.Done()
			got = scr.text()
			blob1 := digest.FromString("blob1").Encoded()
			want := "2 of 5 layers in the store: skipped\nblob " + blob1[:12] + ": 1.0 MB done"
			if got != want {
				t.Errorf("after Done the screen is\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestProgressElapsedMoves: with no event at all after the first (a
// large file being read), the elapsed time still moves: a ticker redraws.
func TestProgressElapsedMoves(t *testing.T) {
	scr := &screen{width: 80}
	area := &statusArea{w: scr, width: func() int { return 80 }}
	start := time.Now()
	var now atomic.Int64
	p := &progress{area: area, what: "web:1", now: func() time.Time { return start.Add(time.Duration(now.Load())) }}
	p.Update(1000, 1)
	defer p.Done()
	now.Store(int64(7 * time.Second))
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(scr.text(), "7s"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no redraw with 7s within 10s:\n%s", scr.text())
		}
	}
}

// TestLogLinesGoAboveTheBar: a log line written while the bar is drawn
// (rootswap -v) lands on a line of its own above it, and the bar is
// drawn again below it, whole.
func TestLogLinesGoAboveTheBar(t *testing.T) {
	scr := &screen{width: 60}
	area := &statusArea{w: scr, width: func() int { return 60 }}
	start := time.Now()
	p := &progress{area: area, what: "web:1", now: func() time.Time { return start.Add(3 * time.Second) }}
	counts := layeredImport(p)
	counts[0].Store(5_000_000)
	p.draw()
	fmt.Fprintln(area, `level=DEBUG msg="layer fetched" layer=1`)
	fmt.Fprintln(area, `level=DEBUG msg="layer fetched" layer=2`)
	lines := strings.Split(scr.text(), "\n")
	if len(lines) != 7 || lines[1] != `level=DEBUG msg="layer fetched" layer=1` || lines[2] != `level=DEBUG msg="layer fetched" layer=2` || !strings.HasPrefix(lines[3], "blob ") || !strings.HasPrefix(lines[6], "0/3 layers (2 skipped), 5.0 MB / 126.6 MB 3%") {
		t.Errorf("screen after two log lines:\n%s", scr.text())
	}
	p.Done()
	if got := scr.text(); strings.Contains(got, "0/3 layers") || !strings.HasSuffix(got, "layer=2") {
		t.Errorf("after Done:\n%s", got)
	}
}

// TestProgressOfParallelImports: imports at once (update --max-parallel)
// each keep their own lines in the area; one that ends takes only its own.
func TestProgressOfParallelImports(t *testing.T) {
	scr := &screen{width: 80}
	area := &statusArea{w: scr, width: func() int { return 80 }}
	start := time.Now()
	now := func() time.Time { return start }
	web := &progress{area: area, what: "web:1", now: now}
	api := &progress{area: area, what: "api:1", now: now}
	web.Update(1000, 1)
	api.Update(2000, 2)
	web.draw()
	api.draw()
	if got := scr.text(); !strings.Contains(got, "import web:1: 1 files") || !strings.Contains(got, "import api:1: 2 files") || strings.Count(got, "\n") != 1 {
		t.Errorf("two imports:\n%s", got)
	}
	web.Done()
	api.draw()
	if got := scr.text(); strings.Contains(got, "web:1") || !strings.Contains(got, "import api:1: 2 files") {
		t.Errorf("after web's Done:\n%s", got)
	}
	api.Done()
	if got := scr.text(); got != "" {
		t.Errorf("after both: %q", got)
	}
}
