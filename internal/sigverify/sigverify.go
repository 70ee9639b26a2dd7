// Package sigverify verifies cosign's Sigstore signatures offline with
// sigstore-go: bundles (cosign v3) and legacy signatures made keyless or
// logged in Rekor (cosign v2), by a requirement's keys or its Fulcio CA
// and Rekor key. It is the one home of sigstore-go, linked only into
// rootswap-verify, the program rootswap runs when a policy needs a
// signature checked (internal/sigproto is what they say to each other):
// sigstore-go pulls in gRPC, go-openapi and Rekor's client, whose size
// and package initialisation every rootswap invocation would otherwise
// pay.
package sigverify

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/rootswap/rootswap/internal/sigproto"
)

// key is a trusted public key, parsed.
type key struct {
	Public      crypto.PublicKey
	Fingerprint string
}

// fulcio is a keyless requirement's CA, parsed, and the identity a
// signing certificate must name.
type fulcio struct {
	Roots, Intermediates []*x509.Certificate
	Fingerprint          string
	Issuer, Subject      string
}

// trusted is a request's trusted material, parsed.
type trusted struct {
	Keys     []key
	Fulcio   *fulcio
	Rekor    []key
	Identity string
}

// Verify judges each of req's signatures: a Result per signature, in
// order, or an error (one line) if the request itself is unusable (another
// version, a key or certificate that does not parse).
func Verify(req sigproto.Request) ([]sigproto.Result, error) {
	if req.V != sigproto.Version {
		return nil, fmt.Errorf("request of protocol v%d, this verifier speaks v%d: install the rootswap-verify built with this rootswap", req.V, sigproto.Version)
	}
	r := &trusted{Identity: req.Identity}
	var err error
	if r.Keys, err = keys(req.Keys); err != nil {
		return nil, err
	}
	if r.Rekor, err = keys(req.Rekor); err != nil {
		return nil, fmt.Errorf("rekor %w", err)
	}
	if f := req.Fulcio; f != nil {
		r.Fulcio = &fulcio{Fingerprint: f.Fingerprint, Issuer: f.Issuer, Subject: f.Subject}
		if r.Fulcio.Roots, err = certs(f.Roots); err != nil {
			return nil, fmt.Errorf("fulcio root %w", err)
		}
		if r.Fulcio.Intermediates, err = certs(f.Intermediates); err != nil {
			return nil, fmt.Errorf("fulcio intermediate %w", err)
		}
		if len(r.Fulcio.Roots) == 0 {
			return nil, errors.New("fulcio: no root certificate")
		}
		if len(r.Rekor) == 0 {
			return nil, errors.New("fulcio: no Rekor key")
		}
	}
	if r.Fulcio == nil && len(r.Keys) == 0 {
		return nil, errors.New("neither keys nor a Fulcio CA to verify with")
	}
	out := make([]sigproto.Result, len(req.Sigs))
	for i, s := range req.Sigs {
		var res sigproto.Result
		if s.Bundle != nil {
			res.How, res.Rank, res.Reason = r.verifyBundle(req.Manifest, s.Bundle)
		} else {
			res.How, res.Rank, res.Reason = r.verifyLegacy(s)
		}
		out[i] = res
	}
	return out, nil
}

func keys(ks []sigproto.Key) ([]key, error) {
	var out []key
	for _, k := range ks {
		pub, err := x509.ParsePKIXPublicKey(k.DER)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k.Fingerprint, err)
		}
		out = append(out, key{Public: pub, Fingerprint: k.Fingerprint})
	}
	return out, nil
}

func certs(ders [][]byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Serve reads one Request from r (at most sigproto.MaxRequest bytes) and
// writes its Verdict to w. A request it cannot judge gets a Verdict with
// Error, and Serve returns that error too; an error writing w is returned
// as it is.
func Serve(r io.Reader, w io.Writer) error {
	v := sigproto.Verdict{V: sigproto.Version}
	res, err := decode(r)
	if err == nil {
		v.Results, err = Verify(res)
	}
	if err != nil {
		v.Error = err.Error()
	}
	bw := bufio.NewWriter(w)
	if werr := json.NewEncoder(bw).Encode(v); werr != nil {
		return werr
	}
	if werr := bw.Flush(); werr != nil {
		return werr
	}
	return err
}

// decode reads one JSON Request: of this protocol version (asked
// first, by a probe that also refuses trailing data, so that a peer of
// another version is told so, not what field it does not know), strictly
// (unknown fields are errors), at most sigproto.MaxRequest bytes.
func decode(r io.Reader) (sigproto.Request, error) {
	var req sigproto.Request
	b, err := io.ReadAll(io.LimitReader(r, sigproto.MaxRequest+1))
	if err != nil {
		return req, fmt.Errorf("request: %w", err)
	}
	if len(b) > sigproto.MaxRequest {
		return req, fmt.Errorf("request: larger than %d bytes", sigproto.MaxRequest)
	}
	var probe struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return req, fmt.Errorf("request: %w", err)
	}
	if probe.V != sigproto.Version {
		return req, fmt.Errorf("request of protocol v%d, this verifier speaks v%d: install the rootswap-verify built with this rootswap", probe.V, sigproto.Version)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("request: %w", err)
	}
	return req, nil // trailing data: the probe refused it
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
