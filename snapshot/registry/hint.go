package registry

import (
	"fmt"
	"os"
	"strings"
)

// plainHTTPHint adds to err, if it says that the registry answered an
// HTTPS request with plain HTTP, how to let rootswap speak plain HTTP to
// it: a registry that is not on loopback, *.local or a private address
// must be marked insecure in the registries file.
func (s *Source) plainHTTPHint(host string, err error) error {
	if err == nil || !strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return err
	}
	file := s.opt.MirrorsFile
	if file == "" {
		file = os.Getenv("ROOTSWAP_REGISTRIES_CONF")
	}
	if file == "" {
		file = DefaultMirrorsFile
	}
	return fmt.Errorf("%w (registry %s speaks plain HTTP; if you trust it, add [[registry]] location = %q, insecure = true to %s)", err, host, host, file)
}
