package main

import (
	"io"
	"os"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/rootswap/rootswap/snapshot"
)

// stderrIsTTY decides whether progress is drawn: on a terminal only, so a
// unit's journal gets the final lines and nothing else.
func stderrIsTTY() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// importProgress returns a snapshot.Progress that draws bytes, entries,
// rate and elapsed time on a terminal, and a function that finishes the
// bar. Off a terminal both do nothing.
func importProgress(what string, quiet bool) (snapshot.Progress, func()) {
	if quiet || !stderrIsTTY() {
		return nil, func() {}
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription("import "+what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionClearOnFinish(),
	)
	var last int64
	return func(bytes, entries int64) {
			bar.Describe("import " + what + ": " + strconv.FormatInt(entries, 10) + " files")
			bar.Add64(bytes - last)
			last = bytes
		}, func() {
			bar.Finish()
		}
}

// pullProgress is where the daemon's pull messages go: the terminal, or
// nowhere.
func pullProgress(quiet bool) io.Writer {
	if quiet || !stderrIsTTY() {
		return nil
	}
	return os.Stderr
}
