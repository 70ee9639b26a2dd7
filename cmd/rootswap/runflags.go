package main

import (
	"github.com/spf13/pflag"

	"github.com/rootswap/rootswap/activate"
)

// runFlags are run's own flags. They come before NAME, with the global
// flags: everything after NAME is systemd-nspawn's. runCmd registers them
// for --help and completion; runArgs parses them.
func runFlags(fs *pflag.FlagSet, o *activate.RunOptions) {
	fs.BoolVar(&o.NoInit, "no-init", false, "run the payload as the container's PID 1 itself, without rootswap's init in front of it")
}
