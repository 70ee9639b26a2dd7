// Command rootswap runs Docker images under systemd-nspawn from a
// deduplicated, content-addressed store, flipping versions atomically.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// heapLimit is the Go heap's soft limit unless GOMEMLIMIT says otherwise.
// A pull's live heap is small (about 17 MB at the merge of a 1 GB image)
// but the collector's default lets the heap grow to twice the live data,
// and rootswap runs on every node beside the services: the limit makes it
// collect earlier instead. Past the limit (an image whose entry lists
// alone are larger) the collector works harder, capped at half the CPU by
// the runtime; nothing fails.
const heapLimit = 40 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(heapLimit)
	}
	homeFromPasswd()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}
