package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/rootswap/rootswap/snapshot"
)

// stderrIsTTY decides whether progress is drawn: on a terminal only, so a
// unit's journal gets the final lines and nothing else.
func stderrIsTTY() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// terminalWidth is stderr's width in columns; 80 when unknown (a pty
// nobody sized, as script(1) makes).
func terminalWidth() int {
	w, _, err := term.GetSize(int(os.Stderr.Fd()))
	if err != nil || w <= 0 {
		return 80
	}
	return w
}

// statusArea is the last lines of a terminal, which progress redraws in
// place; every other line written to stderr (the log) goes through Write,
// which clears the area first and redraws it after, so no log line is
// ever printed onto a bar. Lines are cut to the width less one column: a
// wrapped line could not be redrawn in place and would leave stale
// copies above.
// Several imports at once (update --max-parallel) each own a block of
// lines, drawn in the order they began.
type statusArea struct {
	mu     sync.Mutex
	w      io.Writer
	width  func() int
	lines  []string // on the screen now
	owners []any
	blocks map[any][]string
}

// Write writes p (whole lines, as a logger does) above the area.
func (a *statusArea) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clear()
	n, err := a.w.Write(p)
	a.draw()
	return n, err
}

// set replaces owner's lines in the area; nil removes them.
func (a *statusArea) set(owner any, lines []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.blocks == nil {
		a.blocks = map[any][]string{}
	}
	_, had := a.blocks[owner]
	switch {
	case lines == nil && had:
		delete(a.blocks, owner)
		i := slices.Index(a.owners, owner)
		a.owners = slices.Delete(a.owners, i, i+1)
	case lines != nil:
		if !had {
			a.owners = append(a.owners, owner)
		}
		a.blocks[owner] = lines
	}
	a.clear()
	a.draw()
}

// above prints line above the area, for good.
func (a *statusArea) above(line string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clear()
	fmt.Fprintln(a.w, fit(line, a.width()))
	a.draw()
}

// clear moves to the area's first line and erases to the end of the
// screen. The caller holds mu.
func (a *statusArea) clear() {
	if len(a.lines) == 0 {
		return
	}
	up := ""
	if n := len(a.lines) - 1; n > 0 {
		up = fmt.Sprintf("\x1b[%dA", n)
	}
	fmt.Fprint(a.w, "\r"+up+"\x1b[J")
}

// draw writes the owners' lines where the cursor is, which clear left at
// the start of a line, and leaves the cursor at the end of the last one.
// The caller holds mu.
func (a *statusArea) draw() {
	w := a.width()
	var out []string
	for _, o := range a.owners {
		for _, l := range a.blocks[o] {
			out = append(out, fit(l, w))
		}
	}
	a.lines = out
	if len(out) > 0 {
		fmt.Fprint(a.w, strings.Join(out, "\n"))
	}
}

// fit cuts line to width-1 characters, so the cursor never wraps.
func fit(line string, width int) string {
	if width < 2 {
		return ""
	}
	if utf8.RuneCountInString(line) > width-1 {
		r := []rune(line)
		line = string(r[:width-2]) + "…"
	}
	return line
}

// tick is how often progress redraws while nothing else happens, so the
// elapsed time and a large file's bytes move.
const tick = 200 * time.Millisecond

// importProgress returns the snapshot.Progress of an import of what: on
// a terminal, lines redrawn in area; off one (or with -q) nil: nothing
// is drawn.
func (g *globals) importProgress(what string) snapshot.Progress {
	if g.area == nil {
		return nil // an untyped nil: a nil *progress would be called
	}
	return &progress{area: g.area, what: what, now: time.Now}
}

// progress shows an import as podman pull does: a flattened export as
// its files and bytes; a layered one blob by blob (downloaded bytes of
// the size the manifest declares, and a percentage), with a line for
// each blob done and one for the layers the store had, then a summary.
// It redraws on a ticker from its first event to Done.
type progress struct {
	area *statusArea
	what string
	now  func() time.Time

	mu             sync.Mutex
	start          time.Time
	stop           chan struct{} // closed by Done; nil before the first event
	exited         chan struct{} // closed by the ticker's goroutine as it returns
	bytes, entries int64         // of the stream(s), uncompressed
	layered        bool
	fetch          []snapshot.LayerFetch
	reads          []func() int64 // per fetch, once Fetching; nil: no count
	started, done  []bool
	skipped        int
}

var _ snapshot.LayerProgress = (*progress)(nil)

// begin starts the ticker on the first event and reports whether this
// was it, so that the caller draws at once: an import shorter than a
// tick still shows what it did. The caller holds mu.
func (p *progress) begin() (first bool) {
	if p.stop != nil {
		return false
	}
	p.start = p.now()
	p.stop, p.exited = make(chan struct{}), make(chan struct{})
	go func(stop, exited chan struct{}) {
		defer close(exited)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p.draw()
			}
		}
	}(p.stop, p.exited)
	return true
}

func (p *progress) Update(bytes, entries int64) {
	p.mu.Lock()
	first := p.begin()
	p.bytes, p.entries = bytes, entries
	p.mu.Unlock()
	if first {
		p.draw()
	}
}

func (p *progress) Layers(fetch []snapshot.LayerFetch, skipped int) {
	p.mu.Lock()
	first := p.begin()
	p.layered, p.fetch, p.skipped = true, fetch, skipped
	p.reads = make([]func() int64, len(fetch))
	p.started, p.done = make([]bool, len(fetch)), make([]bool, len(fetch))
	p.mu.Unlock()
	if skipped > 0 {
		p.area.above(fmt.Sprintf("%d of %d layers in the store: skipped", skipped, skipped+len(fetch)))
	}
	if first {
		p.draw()
	}
}

func (p *progress) Fetching(k int, read func() int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k < len(p.started) {
		p.started[k], p.reads[k] = true, read
	}
}

func (p *progress) Fetched(k int, err error) {
	p.mu.Lock()
	if k >= len(p.done) {
		p.mu.Unlock()
		return
	}
	p.done[k] = true
	line := ""
	if err == nil {
		line = fmt.Sprintf("blob %s: %s done", p.blobName(k), humanBytes(p.read(k)))
	}
	p.mu.Unlock()
	if line != "" {
		p.area.above(line)
	}
	p.draw()
}

// Done stops the ticker, waits for a draw it may be doing, and erases
// the lines.
func (p *progress) Done() {
	p.mu.Lock()
	stop, exited := p.stop, p.exited
	p.stop = nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-exited
	}
	p.area.set(p, nil)
}

// draw redraws the lines from the current state.
func (p *progress) draw() {
	p.mu.Lock()
	lines := p.lines(p.now().Sub(p.start), p.area.width())
	p.mu.Unlock()
	p.area.set(p, lines)
}

// read is fetch k's blob bytes read so far: its count while it runs,
// its size once done. The caller holds mu.
func (p *progress) read(k int) int64 {
	switch {
	case p.done[k] && p.fetch[k].Size >= 0:
		return p.fetch[k].Size
	case p.reads[k] != nil:
		return p.reads[k]()
	}
	return 0
}

// blobName is fetch k as a line names it: the blob's short digest (the
// diffID's where the source names no blob). The caller holds mu.
func (p *progress) blobName(k int) string {
	d := p.fetch[k].Blob
	if d == "" {
		d = p.fetch[k].DiffID
	}
	if e := d.Encoded(); len(e) >= 12 {
		return e[:12]
	}
	return d.String()
}

// lines are the status lines after elapsed, each fitted to width by the
// caller: a flattened import's one, or a layered import's line per blob
// being fetched and its summary. The caller holds mu.
func (p *progress) lines(elapsed time.Duration, width int) []string {
	el := elapsed.Round(time.Second).String()
	if !p.layered {
		return []string{progressLine(p.what, p.bytes, p.entries, elapsed, width)}
	}
	var out []string
	var read, total int64
	done, known := 0, true
	for k, f := range p.fetch {
		r := p.read(k)
		read += r
		if f.Size < 0 {
			known = false
		} else {
			total += f.Size
		}
		if p.done[k] {
			done++
			continue
		}
		if !p.started[k] {
			continue
		}
		out = append(out, choose(width,
			"blob "+p.blobName(k)+"  "+ofTotal(r, f.Size, " / "),
			"blob "+p.blobName(k)[:8]+" "+ofTotal(r, f.Size, "/"),
		))
	}
	if !known {
		total = -1
	}
	layers := fmt.Sprintf("%d/%d layers", done, len(p.fetch))
	if p.skipped > 0 {
		layers += fmt.Sprintf(" (%d skipped)", p.skipped)
	}
	rate := ""
	if s := elapsed.Seconds(); s > 0 {
		rate = humanBytes(int64(float64(read)/s)) + "/s, "
	}
	return append(out, choose(width,
		fmt.Sprintf("import %s: %s, %s, %s%s", p.what, layers, ofTotal(read, total, " / "), rate, el),
		fmt.Sprintf("%s, %s, %s%s", layers, ofTotal(read, total, " / "), rate, el),
		fmt.Sprintf("%d/%d layers %s %s", done, len(p.fetch), ofTotal(read, total, "/"), el),
	))
}

// ofTotal is "12.3 MB / 45.6 MB 27%", or "12.3 MB" of an unknown total.
func ofTotal(n, total int64, sep string) string {
	if total <= 0 {
		return humanBytes(n)
	}
	return fmt.Sprintf("%s%s%s %d%%", humanBytes(n), sep, humanBytes(total), min(100, n*100/total))
}

// choose is the first of lines that fits width, else the last (which
// the area cuts).
func choose(width int, lines ...string) string {
	for _, l := range lines {
		if utf8.RuneCountInString(l) <= width-1 {
			return l
		}
	}
	return lines[len(lines)-1]
}

// progressLine is a flattened import's status line, fitted to width.
func progressLine(what string, bytes, entries int64, elapsed time.Duration, width int) string {
	rate := ""
	if s := elapsed.Seconds(); s > 0 {
		rate = ", " + humanBytes(int64(float64(bytes)/s)) + "/s"
	}
	el := elapsed.Round(time.Second)
	return fit(choose(width,
		fmt.Sprintf("import %s: %d files, %s%s, %s", what, entries, humanBytes(bytes), rate, el),
		fmt.Sprintf("%d files, %s%s, %s", entries, humanBytes(bytes), rate, el),
	), width)
}

func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// pullProgress is where the daemon's pull messages go: the terminal, or
// nowhere.
func (g *globals) pullProgress() io.Writer {
	if g.area == nil {
		return nil
	}
	return g.area
}
