package registry

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// brief is a failure to talk to a registry as the end of a one-line
// message that already names the image: what the registry answered, or
// what the network did, without the request's URL (it repeats the image's
// name) nor go-containerregistry's details (`map[Tag:v1]`). d is the
// timeout a stall is reported against.
func brief(err error, d time.Duration) string {
	var te *transport.Error
	switch {
	case errors.As(err, &te):
		return answered(te)
	case errors.Is(err, errTimeout):
		return fmt.Sprintf("no answer within %s", d)
	}
	// The ping tries https and http and joins both failures; each is
	// `Get "URL": what happened`, often the same twice.
	var parts []string
	for _, p := range strings.Split(err.Error(), "; ") {
		p = requestPrefix.ReplaceAllString(p, "")
		if !contains(parts, p) {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "; ")
}

// requestPrefix is net/http's and go-containerregistry's `Get "URL": ` or
// `GET URL: ` before an error.
var requestPrefix = regexp.MustCompile(`(?i)\b(get|head) "?[a-z]+://[^ ]*"?: `)

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// answered is what a registry answered: its status, and the codes and
// messages of its error body, without their details.
func answered(te *transport.Error) string {
	s := fmt.Sprintf("registry answered %d %s", te.StatusCode, http.StatusText(te.StatusCode))
	var said []string
	for _, d := range te.Errors {
		m := string(d.Code)
		if d.Message != "" {
			m += ": " + d.Message
		}
		if !contains(said, m) {
			said = append(said, m)
		}
	}
	if len(said) > 0 {
		s += " (" + strings.Join(said, "; ") + ")"
	}
	return s
}
