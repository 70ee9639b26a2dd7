package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/journal"
	"github.com/rootswap/rootswap/policy"
	"github.com/rootswap/rootswap/unit"
)

// usageError marks a mistake in the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usage(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Exit statuses (README "Commands"): 0 success, 1 failure, 2 usage error,
// 75 store busy (EX_TEMPFAIL from sysexits.h: the same command may succeed
// if retried later), 128+N stopped by signal N (130 for Ctrl-C, 143 for
// SIGTERM), as a shell reports a process a signal killed.
const (
	exitFailure = 1
	exitUsage   = 2
	exitBusy    = 75
)

// interrupted is how a command ends that a signal stopped: whatever
// error the work it cut short returned (a truncated blob, a cancelled
// context) is a consequence, not news.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string {
	if i.sig == syscall.SIGTERM {
		return "terminated"
	}
	return "interrupted"
}

// interruptedBy is err, or the signal that ended ctx when err came after
// it. run's own status (nspawn's, which got the signal) stays.
func interruptedBy(ctx context.Context, err error) error {
	var ex *activate.ExitError
	var in interrupted
	if err == nil || errors.As(err, &ex) || !errors.As(context.Cause(ctx), &in) {
		return err
	}
	return in
}

// geteuid and stderr are os.Geteuid and os.Stderr; tests replace them.
var (
	geteuid           = os.Geteuid
	stderr  io.Writer = os.Stderr
)

// exitCode is the one place that maps error classes to exit statuses, and
// prints the error as one line.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	// run passes nspawn's status on; nspawn has said why.
	var ex *activate.ExitError
	if errors.As(err, &ex) {
		return ex.Status
	}
	var in interrupted
	if errors.As(err, &in) {
		fmt.Fprintln(stderr, journal.ErrorPrefix()+"rootswap:", in)
		return 128 + int(in.sig)
	}
	if errors.Is(err, fs.ErrPermission) && geteuid() != 0 {
		// The store, the units and nspawn are root's: a bare EACCES would
		// read like a broken store.
		fmt.Fprintln(stderr, journal.ErrorPrefix()+"rootswap must run as root:", err)
		return exitFailure
	}
	fmt.Fprintln(stderr, journal.ErrorPrefix()+"rootswap:", err)
	var u usageError
	switch {
	case errors.As(err, &u),
		errors.Is(err, activate.ErrInvalidName),
		errors.Is(err, activate.ErrMountPoint),
		errors.Is(err, unit.ErrInvalid),
		errors.Is(err, cache.ErrInvalid):
		return exitUsage
	case errors.Is(err, cache.ErrLocked):
		return exitBusy
	case errors.Is(err, policy.ErrNoVerifier):
		// rootswap-verify missing: an incomplete installation, a failure
		// of the configuration like a policy file that does not load.
		return exitFailure
	}
	return exitFailure
}
