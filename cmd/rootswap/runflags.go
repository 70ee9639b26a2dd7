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
	fs.Var(entrypointValue{o}, "entrypoint", "run `PROGRAM` instead of the image's ENTRYPOINT, without its CMD (\"\" clears the ENTRYPOINT), as docker run --entrypoint")
}

// entrypointValue is --entrypoint: given, even as "", it replaces the
// image's ENTRYPOINT.
type entrypointValue struct{ o *activate.RunOptions }

func (v entrypointValue) String() string {
	if v.o == nil {
		return ""
	}
	return v.o.Entrypoint
}

func (v entrypointValue) Set(s string) error {
	v.o.Entrypoint, v.o.EntrypointSet = s, true
	return nil
}

func (entrypointValue) Type() string { return "string" }
