package fsys

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// BindReadOnly mounts src at target, read-only from the first moment: a
// detached clone of src (open_tree) is made read-only and then attached,
// so no writable view of src ever exists at target. Kernels without
// mount_setattr (before 5.12) get a bind and a read-only remount.
func BindReadOnly(src, target string) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return bindRemount(src, target)
	}
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	defer unix.Close(fd)
	err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	if errors.Is(err, unix.ENOSYS) {
		return bindRemount(src, target)
	}
	if err != nil {
		return fmt.Errorf("bind %s: read-only: %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, target, err)
	}
	return nil
}

func bindRemount(src, target string) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("bind %s at %s: read-only: %w", src, target, err)
	}
	return nil
}

// Unmount unmounts the topmost mount at target.
func Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// Detach unmounts the topmost mount at target lazily (MNT_DETACH): it
// goes from the mount table at once, and processes that use it keep it
// until they are done.
func Detach(target string) error {
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// MountInfo is one line of a mount table (proc_pid_mountinfo(5)).
type MountInfo struct {
	Dev    string // major:minor of the file system
	Root   string // the directory of that file system mounted here (a bind mount's source)
	Point  string // where it is mounted
	FSType string
	Source string // the field after the fstype: a device, or what the mounter named
	// SuperOpts are the file system's own options (an overlay's
	// lowerdir=…), "" if the line has none.
	SuperOpts string
}

// MountAt returns the topmost mount at dir (absolute, symlinks resolved)
// in this thread's mount namespace; ok is false when dir is no mount
// point.
func MountAt(dir string) (m MountInfo, ok bool, err error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return MountInfo{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l, lok := ParseMountinfo(sc.Text())
		if lok && l.Point == dir {
			m, ok = l, true // later lines are mounted on top of earlier ones
		}
	}
	return m, ok, sc.Err()
}

// ParseMountinfo splits one line of a mountinfo file:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
func ParseMountinfo(line string) (MountInfo, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return MountInfo{}, false
	}
	a, b := strings.Fields(pre), strings.Fields(post)
	if len(a) < 6 || len(b) < 2 {
		return MountInfo{}, false
	}
	m := MountInfo{Dev: a[2], Root: UnescapeMountinfo(a[3]), Point: UnescapeMountinfo(a[4]), FSType: b[0], Source: UnescapeMountinfo(b[1])}
	if len(b) > 2 {
		m.SuperOpts = UnescapeMountinfo(b[2])
	}
	return m, true
}
