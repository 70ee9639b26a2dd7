package main

import (
	"fmt"
	"io"
	"os"
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

// importProgress returns a snapshot.Progress that draws one status line of
// files, bytes, rate and elapsed time on a terminal and erases it when
// done. Off a terminal it returns nil: nothing is drawn.
func importProgress(what string, quiet bool) snapshot.Progress {
	if quiet || !stderrIsTTY() {
		return nil // an untyped nil: a nil *progress would be called
	}
	p := &progress{w: os.Stderr, what: what, start: time.Now(), width: func() int {
		w, _, err := term.GetSize(int(os.Stderr.Fd()))
		if err != nil || w <= 0 { // unknown (a pty nobody sized, as script(1) makes)
			return 80
		}
		return w
	}}
	return p
}

// progress draws one line, rewritten in place with "\r" and erase-to-end,
// never longer than the terminal is wide: a wrapped line could not be
// rewritten and would leave stale copies above.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	what  string
	start time.Time
	width func() int
	last  time.Time
	drawn bool
}

func (p *progress) Update(bytes, entries int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.drawn && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last, p.drawn = now, true
	fmt.Fprint(p.w, "\r"+progressLine(p.what, bytes, entries, now.Sub(p.start), p.width())+"\x1b[K")
}

func (p *progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// progressLine is the status line, cut to width-1 characters so the
// cursor never wraps.
func progressLine(what string, bytes, entries int64, elapsed time.Duration, width int) string {
	rate := ""
	if s := elapsed.Seconds(); s > 0 {
		rate = ", " + humanBytes(int64(float64(bytes)/s)) + "/s"
	}
	line := fmt.Sprintf("import %s: %d files, %s%s, %s", what, entries, humanBytes(bytes), rate, elapsed.Round(time.Second))
	if width < 2 {
		return ""
	}
	if utf8.RuneCountInString(line) > width-1 {
		r := []rune(line)
		line = string(r[:width-2]) + "…"
	}
	return line
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
func pullProgress(quiet bool) io.Writer {
	if quiet || !stderrIsTTY() {
		return nil
	}
	return os.Stderr
}
