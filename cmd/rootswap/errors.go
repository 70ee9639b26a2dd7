package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/internal/journal"
	"github.com/rootswap/rootswap/unit"
)

// usageError marks a mistake in the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usage(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Exit statuses (README "Commands"): 0 success, 1 failure, 2 usage error,
// 75 store busy (EX_TEMPFAIL from sysexits.h: the same command may succeed
// if retried later).
const (
	exitFailure = 1
	exitUsage   = 2
	exitBusy    = 75
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
	fmt.Fprintln(os.Stderr, journal.ErrorPrefix()+"rootswap:", err)
	var u usageError
	switch {
	case errors.As(err, &u),
		errors.Is(err, activate.ErrInvalidName),
		errors.Is(err, unit.ErrInvalid),
		errors.Is(err, cache.ErrInvalid):
		return exitUsage
	case errors.Is(err, cache.ErrLocked):
		return exitBusy
	}
	return exitFailure
}
