package fsys

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned (wrapped) when a lock could not be taken before its
// deadline. The wrapping error names the holders.
var ErrLocked = errors.New("locked")

// errDone is flock's answer when its done channel closes first.
var errDone = errors.New("lock wait cancelled")

// Lock is a held flock(2). The zero value is not usable; see TryLock and
// LockFile.
type Lock struct {
	f *os.File
}

// LockFile takes an flock on path (created if missing), shared or exclusive,
// waiting at most timeout. On timeout the error wraps ErrLocked and names the
// processes that hold the file (from /proc/locks). The caller must Unlock.
//
// A lock file may be removed by whoever holds it exclusively (see
// RemoveLocked): a lock taken on a file that path no longer names is
// dropped and taken again on the file path names now.
func LockFile(ctx context.Context, path string, exclusive bool, timeout time.Duration) (*Lock, error) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := flock(ctx.Done(), f, exclusive, timeout, deadline); err != nil {
			f.Close()
			switch {
			case err == errDone:
				return nil, ctx.Err()
			case errors.Is(err, ErrLocked):
				return nil, err
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		same, err := names(path, f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if same {
			return &Lock{f: f}, nil
		}
		f.Close() // removed while we waited: lock the new file
	}
}

// Flock takes an flock on the open file f, shared or exclusive, waiting at
// most timeout. On timeout the error wraps ErrLocked and names the
// processes that hold the file. The lock goes with f's last close; taking
// it again on the same open file (as bbolt does) returns at once.
//
// flock(2) queues nobody: shared lockers that keep overlapping would keep
// an exclusive one out for ever. So every Flock caller first passes a
// turnstile, an OFD lock (fcntl(2), independent of flock) on the file's
// first byte, taken as the flock will be and dropped once the flock is
// held: a waiting exclusive locker holds the turnstile, and the shared
// lockers that come after it wait there until it is in.
func Flock(f *os.File, exclusive bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if err := retry(nil, f, timeout, deadline, func() error { return turnstile(f, exclusive) }); err != nil {
		return err
	}
	defer unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_UNLCK, Whence: io.SeekStart, Len: 1})
	return flock(nil, f, exclusive, timeout, deadline)
}

// turnstile tries the OFD lock on f's first byte once; EWOULDBLOCK if it
// is taken.
func turnstile(f *os.File, exclusive bool) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Len: 1}
	if exclusive {
		lk.Type = unix.F_WRLCK
	}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if err == unix.EAGAIN || err == unix.EACCES {
		return unix.EWOULDBLOCK
	}
	return err
}

// flock waits for an flock on f until deadline (an error wrapping
// ErrLocked that says timeout and names the holders) or until done is
// closed (errDone).
func flock(done <-chan struct{}, f *os.File, exclusive bool, timeout time.Duration, deadline time.Time) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	return retry(done, f, timeout, deadline, func() error { return unix.Flock(int(f.Fd()), how|unix.LOCK_NB) })
}

// maxRetryWait caps retry's pause between attempts: short, since a
// waiter that sleeps long leaves the lock idle after it was released.
const maxRetryWait = 8 * time.Millisecond

// retry calls try until it returns anything but EWOULDBLOCK or EINTR,
// until deadline (an error wrapping ErrLocked that says timeout and names
// the holders of f's flock) or until done is closed (errDone).
func retry(done <-chan struct{}, f *os.File, timeout time.Duration, deadline time.Time, try func() error) error {
	wait := time.Millisecond
	for {
		err := try()
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			return err
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w after %s: held by %s", ErrLocked, timeout, Holders(f))
		}
		select {
		case <-done:
			return errDone
		case <-time.After(wait):
		}
		if wait < maxRetryWait {
			wait *= 2
		}
	}
}

// names reports whether path still names the open file f.
func names(path string, f *os.File) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	switch err := unix.Stat(path, &b); {
	case err == unix.ENOENT:
		return false, nil
	case err != nil:
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// RemoveLocked removes the lock file path if nobody holds it, reporting
// whether it did. A process that opened the file before the
// removal finds, once it gets the flock, that path no longer names it, and
// LockFile takes a new one.
func RemoveLocked(path string) (bool, error) {
	l, free, err := TryLock(path)
	if err != nil || !free {
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return false, err
	}
	defer l.Unlock()
	if err := os.Remove(path); err != nil {
		return false, err
	}
	return true, nil
}

// CreateLocked creates path as a new lock file that is already locked
// exclusively when it appears: it is made unnamed (O_TMPFILE), locked, and
// only then linked in. A cleaner that finds the name free to lock can
// therefore trust that its owner is gone. path must not exist.
func CreateLocked(path string) (*Lock, error) {
	fd, err := unix.Open(filepath.Dir(path), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "link", Path: path, Err: err}
	}
	return &Lock{f: f}, nil
}

// TryLock takes an exclusive flock on path without waiting. It reports
// false, nil when somebody else holds it.
func TryLock(path string) (*Lock, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, true, nil
}

// Unlock releases the lock. It is safe to call on a nil Lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}

// Holders describes the processes holding an flock on f's inode, as
// "pid 123 (rootswap gc)", from /proc/locks. It never fails: when nothing
// can be learnt it says so.
func Holders(f *os.File) string {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "an unknown process"
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	lf, err := os.Open("/proc/locks")
	if err != nil {
		return "an unknown process"
	}
	defer lf.Close()
	seen := map[int]bool{}
	var who []string
	sc := bufio.NewScanner(lf)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; blocked waiters carry "->".
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != id {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil || seen[pid] || pid == os.Getpid() {
			continue
		}
		seen[pid] = true
		who = append(who, fmt.Sprintf("pid %d (%s)", pid, cmdline(pid)))
	}
	if len(who) == 0 {
		return "an unknown process"
	}
	return strings.Join(who, ", ")
}

func cmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return "?"
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) > 3 {
		args = append(args[:3], "…")
	}
	for i, a := range args {
		if i == 0 {
			if j := strings.LastIndexByte(a, '/'); j >= 0 {
				args[i] = a[j+1:]
			}
		}
	}
	return strings.Join(args, " ")
}
