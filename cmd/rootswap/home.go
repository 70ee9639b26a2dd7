package main

import (
	"os"
	"os/user"
)

// homeFromPasswd sets $HOME to the passwd entry's home directory when it
// is unset, as it is in a systemd unit without User=: the registry
// keychain finds Docker's and podman's credential files under $HOME, and
// without it would find none, so a private registry that works from a
// root shell would fail at boot with "authentication failed". An entry
// that cannot be read leaves $HOME unset (requests are then anonymous).
func homeFromPasswd() {
	if os.Getenv("HOME") != "" {
		return
	}
	if u, err := user.Current(); err == nil && u.HomeDir != "" {
		os.Setenv("HOME", u.HomeDir)
	}
}
