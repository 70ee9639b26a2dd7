package sigverify

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/sigproto"
	"github.com/rootswap/rootswap/internal/sigstoretest"
)

// TestServe: a request of this version gets one result per signature, in
// order; a request of another version, with an unknown field, trailing
// data or a key that does not parse gets a verdict whose error says so
// (the bundle cases themselves are policy's tests, through this program).
func TestServe(t *testing.T) {
	k := sigstoretest.NewKey(t)
	blk, _ := pem.Decode(k.PublicPEM(t))
	if _, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
		t.Fatal(err)
	}
	m := digest.FromString("manifest")
	req := sigproto.Request{V: sigproto.Version, Manifest: m.String(), Identity: "matchRepoDigestOrExact",
		Keys: []sigproto.Key{{DER: blk.Bytes, Fingerprint: k.Fingerprint(t)}},
		Sigs: []sigproto.Sig{{Bundle: k.Sign(t, m, sigstoretest.Options{})}, {Bundle: []byte("{}")}, {Bundle: k.Sign(t, digest.FromString("other"), sigstoretest.Options{})}}}
	good, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(in []byte) (sigproto.Verdict, error) {
		var out bytes.Buffer
		err := Serve(bytes.NewReader(in), &out)
		var v sigproto.Verdict
		if jerr := json.Unmarshal(out.Bytes(), &v); jerr != nil {
			t.Fatalf("verdict %q: %v", out.Bytes(), jerr)
		}
		if v.V != sigproto.Version {
			t.Errorf("verdict of version %d", v.V)
		}
		return v, err
	}
	v, err := serve(good)
	if err != nil || len(v.Results) != 3 {
		t.Fatalf("Serve: %+v, %v", v, err)
	}
	if r := v.Results[0]; r.How != "key "+k.Fingerprint(t) || r.Reason != "" {
		t.Errorf("signed bundle: %+v", r)
	}
	if r := v.Results[1]; r.Rank != 2 || !strings.Contains(r.Reason, "malformed") {
		t.Errorf("malformed bundle: %+v", r)
	}
	if r := v.Results[2]; r.Rank != 3 || !strings.Contains(r.Reason, "the signature is for manifest") {
		t.Errorf("bundle for another digest: %+v", r)
	}
	bad := req
	bad.Keys = []sigproto.Key{{DER: []byte("junk"), Fingerprint: "sha256:ab"}}
	junkKey, _ := json.Marshal(bad)
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"another version", bytes.Replace(good, []byte(`"v":1`), []byte(`"v":2,"new":true`), 1), "request of protocol v2, this verifier speaks v1"},
		{"unknown field", bytes.Replace(good, []byte(`"v":1`), []byte(`"v":1,"new":true`), 1), `unknown field "new"`},
		{"trailing data", append(good, "{}"...), "after top-level value"},
		{"not JSON", []byte("junk"), "request: "},
		{"a key that does not parse", junkKey, "key sha256:ab: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := serve(tc.in)
			if err == nil || !strings.Contains(v.Error, tc.err) || v.Results != nil || strings.Contains(v.Error, "\n") {
				t.Errorf("Serve: %+v, %v; want one line with %q", v, err, tc.err)
			}
		})
	}
}
