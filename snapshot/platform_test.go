package snapshot

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCheckPlatform(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	for _, tc := range []struct {
		have ocispec.Platform
		want string
		err  string // "" for none
	}{
		{ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}, "", ""},
		{ocispec.Platform{}, "", ""},
		{ocispec.Platform{OS: "linux", Architecture: other}, "", "is for linux/" + other + ", and this host runs linux/" + runtime.GOARCH + ": give --platform linux/" + other},
		{ocispec.Platform{OS: "linux", Architecture: other}, "linux/" + other, ""},
		{ocispec.Platform{OS: "windows", Architecture: runtime.GOARCH}, "", "is for windows/" + runtime.GOARCH},
		{ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "linux/arm/v6", "is for linux/arm/v7, not linux/arm/v6 (--platform)"},
		{ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "linux/arm", ""},
		{ocispec.Platform{OS: "linux", Architecture: "arm64"}, "linux/arm64/v8", ""},
	} {
		err := CheckPlatform("img", tc.have, tc.want)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%+v want %q: %v", tc.have, tc.want, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrPlatform)):
			t.Errorf("%+v want %q: error %v, want %q", tc.have, tc.want, err, tc.err)
		}
	}
	for _, bad := range []string{"linux", "/amd64", "linux/", "a/b/c/d", "linux/arm/"} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) accepted", bad)
		}
	}
}
