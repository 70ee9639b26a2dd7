// Command rootswap-verify checks cosign's Sigstore signatures for
// rootswap, offline: it reads one JSON request on stdin (the signatures
// of one image and the trusted material of one sigstoreSigned
// requirement) and writes one JSON verdict on stdout (internal/sigproto).
// rootswap runs it, from its own directory or $ROOTSWAP_VERIFY, only
// when a policy needs a Sigstore signature checked, so that rootswap
// itself links none of sigstore-go. It is not meant to be run by hand.
//
// Exit status: 0 with a verdict, 1 for a request it could not judge (the
// verdict's error says why, and stderr), 2 for arguments.
package main

import (
	"fmt"
	"os"

	"github.com/rootswap/rootswap/internal/sigverify"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "rootswap-verify: takes no arguments: rootswap writes it a JSON request on stdin")
		os.Exit(2)
	}
	if err := sigverify.Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rootswap-verify:", err)
		os.Exit(1)
	}
}
