package fsys

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReadOnlyView gives the calling goroutine a private mount namespace in
// which dir and every mount below it are read-only, and checks that each
// of paths (which may reach dir through symlinks) lies on a read-only
// mount there. Nothing propagates back to the host: other processes,
// including later rootswap commands, still see dir writable.
//
// Contract: the goroutine is locked to its OS thread and stays locked; the
// view holds for that thread, for what it execs (syscall.Exec) and for the
// children it forks (os/exec from the same goroutine: the clone runs on the
// locked thread), and for nothing else in this process. Call it last,
// just before exec or fork: after it, nothing under dir can be written
// from this thread. On error the thread may be in a half-made view; the
// caller must not exec or fork then, but return and exit.
//
// Long on purpose: steps 1-5 must run in this order on one locked thread, and read best straight.
func ReadOnlyView(dir string, paths ...string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("read-only view of %s: %w", dir, err)
	}
	if real, err = filepath.Abs(real); err != nil {
		return fmt.Errorf("read-only view of %s: %w", dir, err)
	}
	lockThread()
	step := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("read-only view of %s: %s: %w", dir, what, err)
		}
		return nil
	}
	// 1. A mount namespace of this thread's own (CLONE_NEWNS implies an
	// unshared fs struct, which Linux allows for one thread).
	if err := step("unshare mount namespace", unix.Unshare(unix.CLONE_NEWNS)); err != nil {
		return err
	}
	// 2. Slave, recursively: nothing mounted here reaches the host, while
	// the host's unmounts still reach us; a private copy would hold every
	// host mount of the moment busy for as long as the container runs.
	if err := step("make / a slave", unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, "")); err != nil {
		return err
	}
	// 3. A recursive bind of dir onto itself: a mount of its own (dir need
	// not be a mount point) that carries every sub-mount along. It alone
	// is private: no host mount appearing under dir later joins the view
	// unchecked.
	if err := step("bind", unix.Mount(real, real, "", unix.MS_BIND|unix.MS_REC, "")); err != nil {
		return err
	}
	if err := step("make the view private", unix.Mount("", real, "", unix.MS_REC|unix.MS_PRIVATE, "")); err != nil {
		return err
	}
	// 4. Read-only, sub-mounts included. mount_setattr(2) does the whole
	// subtree at once and leaves nosuid/nodev/noexec as they were;
	// kernels before 5.12 get one remount per mount.
	err = unix.MountSetattr(unix.AT_FDCWD, real, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	if errors.Is(err, unix.ENOSYS) {
		err = remountEachReadOnly(real)
	}
	if err := step("make read-only", err); err != nil {
		return err
	}
	// 5. Trust nothing above: every mount at or under dir must now say ro,
	// and so must the file system under each path the caller will hand on.
	if err := step("check", checkReadOnly(real)); err != nil {
		return err
	}
	for _, p := range paths {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			return fmt.Errorf("read-only view of %s: %s: %w", dir, p, err)
		}
		if st.Flags&unix.ST_RDONLY == 0 {
			return fmt.Errorf("read-only view of %s: %s is still on a writable mount", dir, p)
		}
	}
	return nil
}

// lockThread locks the goroutine to its thread for good: the thread's
// namespace is no longer the process's, so the runtime must not hand the
// thread to another goroutine (a locked thread whose goroutine exits is
// destroyed, not reused).
func lockThread() { runtime.LockOSThread() }

// remountEachReadOnly remounts dir and every mount below it read-only,
// parents first, keeping each mount's other flags.
func remountEachReadOnly(dir string) error {
	ms, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range ms {
		var st unix.Statfs_t
		if err := unix.Statfs(m.point, &st); err != nil {
			return err
		}
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
		for _, f := range [][2]int64{{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
			{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME}} {
			if int64(st.Flags)&f[0] != 0 {
				flags |= uintptr(f[1])
			}
		}
		if err := unix.Mount("", m.point, "", flags, ""); err != nil {
			return fmt.Errorf("remount %s: %w", m.point, err)
		}
	}
	return nil
}

func checkReadOnly(dir string) error {
	ms, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		return fmt.Errorf("no mount at %s", dir)
	}
	for _, m := range ms {
		if !m.ro {
			return fmt.Errorf("%s is still mounted read-write", m.point)
		}
	}
	return nil
}

type mountPoint struct {
	id, parent string
	point      string
	ro         bool
}

// mountsUnder lists the visible mounts at or below dir in this thread's
// mount namespace (/proc/thread-self: /proc/self is the main thread's,
// which kept the host's), shortest path first. Visible means the topmost
// mount at dir and its descendants: the recursive bind in ReadOnlyView
// covers the original mounts at the same paths, which stay listed (and
// writable) but cannot be reached.
func mountsUnder(dir string) ([]mountPoint, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var all []mountPoint
	top := -1
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		p := UnescapeMountinfo(fields[4])
		if p != dir && !strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/") {
			continue
		}
		ro := false
		for _, o := range strings.Split(fields[5], ",") {
			ro = ro || o == "ro"
		}
		if p == dir {
			top = len(all) // later lines are mounted on top of earlier ones
		}
		all = append(all, mountPoint{id: fields[0], parent: fields[1], point: p, ro: ro})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := all
	if top >= 0 {
		visible := map[string]bool{all[top].id: true}
		out = []mountPoint{all[top]}
		for grew := true; grew; {
			grew = false
			for _, m := range all {
				if !visible[m.id] && visible[m.parent] {
					visible[m.id], grew = true, true
					out = append(out, m)
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].point) < len(out[j].point) })
	return out, nil
}

// UnescapeMountinfo undoes mountinfo's octal escapes (\040 for a space,
// and tab, newline and backslash).
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
