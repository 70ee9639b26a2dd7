package pid1

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// relayNotify lets a payload behind the init report readiness. nspawn
// gives the container's PID 1 $NOTIFY_SOCKET and takes a message there
// (READY=1 for --notify-ready, STATUS=) only from that PID 1: it compares
// the sender's credentials with the PID it started and ignores anyone
// else. The payload is the init's child, so the init listens at
// notifyPath, gives the payload that as its $NOTIFY_SOCKET, and sends on
// every message a process of the container sends there, as its own.
//
// It returns the payload's environment (env with NOTIFY_SOCKET replaced)
// and the function that stops the relay. Without $NOTIFY_SOCKET there is
// nothing to relay; when the relay cannot be set up it says why on
// stderr and env stays as it is (the payload's messages are ignored, as
// before).
func relayNotify(env []string, stderr io.Writer) ([]string, func()) {
	up := os.Getenv("NOTIFY_SOCKET")
	if up == "" {
		return env, func() {}
	}
	in, out, err := notifySockets(up)
	if err != nil {
		fmt.Fprintf(stderr, "rootswap-init: the payload's sd_notify messages are not relayed: %v\n", err)
		return env, func() {}
	}
	done := make(chan struct{})
	go relay(in, out, done)
	payload := []string{"NOTIFY_SOCKET=" + notifyPath}
	for _, kv := range env {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			payload = append(payload, kv)
		}
	}
	return payload, func() {
		// Both, so that a send in progress ends too.
		in.Close()
		out.Close()
		<-done
		os.Remove(notifyPath)
	}
}

// notifySockets are the relay's two ends: in, listening at notifyPath
// with the senders' credentials on (to tell the container's processes
// from others), writable by every user (the payload may run as any);
// out, connected to up, nspawn's socket (a path, or "@name" for an
// abstract one).
func notifySockets(up string) (in, out *net.UnixConn, err error) {
	os.Remove(notifyPath) // a socket file left by an init before
	if in, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"}); err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*net.UnixConn, *net.UnixConn, error) {
		in.Close()
		os.Remove(notifyPath)
		return nil, nil, err
	}
	rc, err := in.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1) }); err != nil {
		return fail(err)
	}
	if serr != nil {
		return fail(fmt.Errorf("%s: SO_PASSCRED: %w", notifyPath, serr))
	}
	if err := os.Chmod(notifyPath, 0o666); err != nil {
		return fail(err)
	}
	if out, err = net.DialUnix("unixgram", nil, &net.UnixAddr{Name: up, Net: "unixgram"}); err != nil {
		return fail(fmt.Errorf("NOTIFY_SOCKET %s: %w", up, err))
	}
	return in, out, nil
}

// notifySendTimeout bounds the relay's send of one message.
const notifySendTimeout = 5 * time.Second

// relay sends out each message in receives from a process of the
// container (whose PID the kernel can name in the init's PID namespace:
// a sender outside it is PID 0), until in is closed; then it closes
// done. File descriptors sent along (FDSTORE=1) are closed: nspawn keeps
// none.
func relay(in, out *net.UnixConn, done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred)+syscall.CmsgSpace(4*253))
	for {
		n, oobn, _, _, err := in.ReadMsgUnix(buf, oob)
		if err != nil {
			return // closed (a truncated message is no error)
		}
		if fromContainer(oob[:oobn]) && n > 0 {
			// Bounded: a receiver that stops reading (its queue full)
			// costs that message, never the init's exit, which waits
			// for this loop.
			out.SetWriteDeadline(time.Now().Add(notifySendTimeout))
			out.Write(buf[:n])
		}
	}
}

// fromContainer reads a message's control data: whether its sender has
// a PID in the init's namespace. It closes the descriptors it carries.
func fromContainer(oob []byte) bool {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	ok := false
	for _, m := range msgs {
		if c, err := syscall.ParseUnixCredentials(&m); err == nil && c.Pid > 0 {
			ok = true
		}
		if fds, err := syscall.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				syscall.Close(fd)
			}
		}
	}
	return ok
}
