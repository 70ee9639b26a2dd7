// Command rootswap runs Docker images under systemd-nspawn from a
// deduplicated, content-addressed store, flipping versions atomically.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/rootswap/rootswap/internal/pid1"
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
	// The hidden subcommand run has nspawn start as the payload's init in
	// the container: nothing of the CLI, no flags, the payload's argv as
	// given (see internal/pid1).
	if len(os.Args) > 1 && os.Args[1] == pid1.Command {
		os.Exit(pid1.Run(os.Args[2:], os.Stderr))
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(heapLimit)
	}
	homeFromPasswd()
	ctx, stop := signalContext()
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(interruptedBy(ctx, err)))
}

// signalContext is cancelled by the first SIGINT or SIGTERM, with an
// interrupted naming it as the cause; until stop, later ones are caught
// too (run passes them to nspawn itself).
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(interrupted{s.(syscall.Signal)})
		case <-done:
		}
	}()
	return ctx, func() { signal.Stop(sigs); close(done); cancel(nil) }
}
