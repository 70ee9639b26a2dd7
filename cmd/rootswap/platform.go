package main

import (
	"github.com/spf13/pflag"

	"github.com/rootswap/rootswap/snapshot"
)

// platformValue is --platform: OS/ARCH[/VARIANT], checked as it is set
// (so ROOTSWAP_PLATFORM is checked too).
type platformValue struct{ p *string }

func (v platformValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v platformValue) Set(s string) error {
	if _, err := snapshot.ParsePlatform(s); err != nil {
		return err
	}
	*v.p = s
	return nil
}

func (platformValue) Type() string { return "string" }

// platformFlag registers --platform, the platform images are picked and
// checked for.
func platformFlag(fs *pflag.FlagSet, p *string) {
	fs.Var(platformValue{p}, "platform", "the `OS/ARCH[/VARIANT]` to pick from a multi-platform image and to accept an image for (default this host's, linux/"+hostArch()+"; env ROOTSWAP_PLATFORM)")
	envFlag(fs, "platform", "ROOTSWAP_PLATFORM")
}

func hostArch() string { p, _ := snapshot.ParsePlatform(""); return p.Architecture }
