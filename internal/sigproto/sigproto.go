// Package sigproto is the wire protocol between rootswap and its
// signature verifier, rootswap-verify: one JSON Request on the
// verifier's stdin, one JSON Verdict on its stdout. It holds only the
// types, so that rootswap links none of the verifier's cryptography
// (sigstore-go and the gRPC, go-openapi and Rekor packages it pulls in,
// whose start-up every rootswap invocation would pay).
//
// The protocol is versioned by the "v" field of both documents: a
// verifier answers a request of another version with a Verdict whose
// Error says so, and rootswap refuses a verdict of another version. Bump
// Version on any change a peer of the old version would misread.
package sigproto

// Version is the protocol version this build speaks.
const Version = 1

// MaxRequest bounds a request's size as the verifier reads it: the
// signatures of one image, each bounded by the registry source.
const MaxRequest = 256 << 20

// MaxVerdict bounds a verdict's size as rootswap reads it.
const MaxVerdict = 4 << 20

// Request asks whether any of Sigs is a signature of the image with
// manifest digest Manifest by the trusted material of one sigstoreSigned
// requirement: Keys, or Fulcio (keyless); with Rekor, a Rekor key that
// must have logged it.
type Request struct {
	V        int     `json:"v"`
	Manifest string  `json:"manifest"`           // the manifest digest pulled, "sha256:…"
	Identity string  `json:"identity,omitempty"` // the requirement's signedIdentity type
	Keys     []Key   `json:"keys,omitempty"`
	Fulcio   *Fulcio `json:"fulcio,omitempty"`
	Rekor    []Key   `json:"rekor,omitempty"`
	Sigs     []Sig   `json:"sigs"`
}

// Key is a trusted public key: its DER SubjectPublicKeyInfo and its
// fingerprint as admissions name it ("sha256:" and the hex sha256 of
// the DER).
type Key struct {
	DER         []byte `json:"der"`
	Fingerprint string `json:"fingerprint"`
}

// Fulcio is a keyless requirement's CA (DER certificates) and the
// identity a signing certificate must name.
type Fulcio struct {
	Roots         [][]byte `json:"roots"`
	Intermediates [][]byte `json:"intermediates,omitempty"`
	Fingerprint   string   `json:"fingerprint"`
	Issuer        string   `json:"issuer"`
	Subject       string   `json:"subject"`
}

// Sig is one signature: a Sigstore bundle (Bundle, its JSON), or a
// legacy cosign signature: the simple-signing payload, the decoded
// signature over it and its annotations (certificate and chain, PEM;
// Rekor's "bundle", JSON). The verifier checks a legacy signature's
// cryptography only; the payload's claims are rootswap's to check.
type Sig struct {
	Bundle    []byte `json:"bundle,omitempty"`
	Payload   []byte `json:"payload,omitempty"`
	Signature []byte `json:"signature,omitempty"`
	Cert      string `json:"cert,omitempty"`
	Chain     string `json:"chain,omitempty"`
	Rekor     []byte `json:"rekor,omitempty"`
}

// Verdict answers a Request: one Result per signature, in order; or
// Error, a one-line reason the request as a whole could not be judged.
type Verdict struct {
	V       int      `json:"v"`
	Results []Result `json:"results,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Result is one signature's answer: How it verifies (an admission's
// middle: "key FP [rekor FP]" or "certificate CA issuer I subject S
// rekor FP"), or the Rank and Reason of why not (the ranks by which
// rootswap picks the most telling reason: 1 another key, 2 malformed,
// 3 another digest, 4 identity).
type Result struct {
	How    string `json:"how,omitempty"`
	Rank   int    `json:"rank,omitempty"`
	Reason string `json:"reason,omitempty"`
}
