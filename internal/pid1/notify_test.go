package pid1

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// notifySend is a payload that sends msg to $NOTIFY_SOCKET, then says
// where it sent it, and the socket's permissions.
func notifySend(msg string) int {
	path := os.Getenv("NOTIFY_SOCKET")
	fi, err := os.Stat(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify-send:", err)
		return 1
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err == nil {
		_, err = c.Write([]byte(msg))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify-send:", err)
		return 1
	}
	fmt.Printf("sent to %s %v\n", path, fi.Mode().Perm())
	return 0
}

// nspawnSocket is a socket like nspawn's: it receives with the senders'
// credentials.
func nspawnSocket(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	rc, _ := l.SyscallConn()
	rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1) })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestRelaysNotify: the payload's sd_notify message reaches $NOTIFY_SOCKET
// as the init's own, as nspawn wants it (it takes messages from the
// container's PID 1 only), and the payload's $NOTIFY_SOCKET is the
// init's. Without it a payload behind the init could never report
// READY=1.
func TestRelaysNotify(t *testing.T) {
	dir := t.TempDir()
	up := nspawnSocket(t, filepath.Join(dir, "notify"))
	relay := filepath.Join(dir, "relay")
	msg := "READY=1\nSTATUS=serving"
	p := startInitEnv(t, []string{"NOTIFY_SOCKET=" + filepath.Join(dir, "notify"), notifyEnv + "=" + relay},
		"--", os.Args[0], "-notify-send", msg)
	// Writable by all: the payload may run as any user.
	if l := p.line(t); l != "sent to "+relay+" -rw-rw-rw-" {
		t.Errorf("payload said %q, want it sent to the init's socket %s, which any user may write", l, relay)
	}
	up.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf, oob := make([]byte, 4096), make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	n, oobn, _, _, err := up.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("nothing reached NOTIFY_SOCKET: %v", err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control data %v, %v", msgs, err)
	}
	cred, err := syscall.ParseUnixCredentials(&msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != msg || int(cred.Pid) != p.cmd.Process.Pid {
		t.Errorf("NOTIFY_SOCKET got %q from PID %d, want %q from the init, PID %d", buf[:n], cred.Pid, msg, p.cmd.Process.Pid)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("init exited %d", code)
	}
	if _, err := os.Lstat(relay); !os.IsNotExist(err) {
		t.Errorf("the init left its socket: %v", err)
	}
}

// Without $NOTIFY_SOCKET the init makes no socket, and the payload gets
// none.
func TestNoNotifySocket(t *testing.T) {
	relay := filepath.Join(t.TempDir(), "relay")
	p := startInitEnv(t, []string{"NOTIFY_SOCKET=", notifyEnv + "=" + relay}, "sh", "-c", `echo "[$NOTIFY_SOCKET]"; test ! -e "$0"`, relay)
	if l := p.line(t); l != "[]" {
		t.Errorf("payload's NOTIFY_SOCKET %s", l)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("init exited %d: the socket was made", code)
	}
}

// notifyFlood is a payload that sends more messages than a receiver
// that never reads can queue, each for a second at most, then exits.
func notifyFlood() int {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify-flood:", err)
		return 1
	}
	for i := 0; i < 100; i++ {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("STATUS=flood")); err != nil {
			break
		}
	}
	fmt.Println("flooded")
	return 0
}

// A receiver that stops reading costs messages, never the init's exit:
// the payload floods NOTIFY_SOCKET, which nobody reads, and ends; the
// init ends with it (wait allows 30s).
func TestNotifyReceiverStuck(t *testing.T) {
	dir := t.TempDir()
	nspawnSocket(t, filepath.Join(dir, "notify")) // never read
	p := startInitEnv(t, []string{"NOTIFY_SOCKET=" + filepath.Join(dir, "notify"), notifyEnv + "=" + filepath.Join(dir, "relay")},
		"--", os.Args[0], "-notify-flood")
	if l := p.line(t); l != "flooded" {
		t.Errorf("payload said %q", l)
	}
	start := time.Now()
	if code := p.wait(t); code != 0 {
		t.Errorf("init exited %d", code)
	}
	t.Logf("the init exited %s after the payload's last message", time.Since(start).Round(time.Millisecond))
}
