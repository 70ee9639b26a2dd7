package registry

import (
	"github.com/rootswap/rootswap/index"

	"strings"
)

// Transport splits an image argument into its containers-transports(5)
// transport name ("docker", "oci", "docker-archive", "docker-daemon") and
// the rest. A bare REPO:TAG has none: ok is false, and it keeps its old
// meaning (the Docker daemon). Windows-style or URL-like inputs that are
// not one of these four are not ours either.
func Transport(image string) (name, rest string, ok bool) {
	if r, ok := strings.CutPrefix(image, "docker://"); ok {
		return "docker", r, true
	}
	for _, t := range []string{"oci", "docker-archive", "docker-daemon"} {
		if r, ok := strings.CutPrefix(image, t+":"); ok {
			return t, r, true
		}
	}
	return "", "", false
}

// RefCache remembers what refs resolved to (index.Ref records) between
// processes. LookupRef's
// bool is false (and the error nil) when ref has no record.
type RefCache interface {
	LookupRef(ref string) (index.Ref, bool, error)
	RecordRef(index.Ref) error
}
