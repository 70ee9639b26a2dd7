package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// A legacy signature made keyless (cosign v2's `cosign sign` without a
// key) or logged in Rekor carries, beside its payload and signature, layer
// annotations (cosign's specs/SIGNATURE_SPEC.md): the signing certificate
// and its chain (PEM), and a "bundle" that is Rekor's signed entry
// timestamp over the entry's body, time, index and log ID. Here they are
// put in the shape of a Sigstore bundle of version 0.1 (a message
// signature over the payload, the certificate chain or the key, the log
// entry with its promise), which sigstore-go checks as it checks bundles.

// rekorAnnotation is the "bundle" annotation's JSON.
type rekorAnnotation struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// legacyBundle is legacy signature s (sig its decoded signature) as a
// Sigstore bundle.
func legacyBundle(s Signature, sig []byte) (*bundle.Bundle, error) {
	sum := sha256.Sum256(s.Payload)
	pb := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle+json;version=0.1",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{}},
		},
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     sig,
		}},
	}
	if s.Cert != "" {
		var chain [][]byte
		for rest := []byte(s.Cert + "\n" + s.Chain); ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE", blk.Type)
			}
			chain = append(chain, blk.Bytes)
		}
		if len(chain) == 0 {
			return nil, errors.New("the certificate annotation holds no PEM certificate")
		}
		var certs []*protocommon.X509Certificate
		for _, der := range chain {
			certs = append(certs, &protocommon.X509Certificate{RawBytes: der})
		}
		pb.VerificationMaterial.Content = &protobundle.VerificationMaterial_X509CertificateChain{
			X509CertificateChain: &protocommon.X509CertificateChain{Certificates: certs},
		}
	}
	if s.Rekor != nil {
		var ra rekorAnnotation
		if err := json.Unmarshal(s.Rekor, &ra); err != nil {
			return nil, fmt.Errorf("the Rekor bundle annotation: %w", err)
		}
		body, err := base64.StdEncoding.DecodeString(ra.Payload.Body)
		if err != nil {
			return nil, fmt.Errorf("the Rekor entry's body: %w", err)
		}
		id, err := hex.DecodeString(ra.Payload.LogID)
		if err != nil {
			return nil, fmt.Errorf("the Rekor entry's log ID: %w", err)
		}
		var kv struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := json.Unmarshal(body, &kv); err != nil {
			return nil, fmt.Errorf("the Rekor entry's body: %w", err)
		}
		pb.VerificationMaterial.TlogEntries = []*protorekor.TransparencyLogEntry{{
			LogIndex:          ra.Payload.LogIndex,
			LogId:             &protocommon.LogId{KeyId: id},
			KindVersion:       &protorekor.KindVersion{Kind: kv.Kind, Version: kv.APIVersion},
			IntegratedTime:    ra.Payload.IntegratedTime,
			InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: ra.SignedEntryTimestamp},
			CanonicalizedBody: body,
		}}
	}
	return bundle.NewBundle(pb)
}

// verifyLegacySigstore checks legacy signature s (sig decoded) with
// sigstore-go against r's keys and Rekor key, or its Fulcio CA: the middle
// of an admission's part, or the rank and text of why not.
func (r Requirement) verifyLegacySigstore(s Signature, sig []byte) (string, int, string) {
	if r.Fulcio != nil && s.Cert == "" {
		return "", 1, "signed by another key: a legacy signature without a certificate, and the scope is keyless"
	}
	if s.Rekor == nil {
		return "", 1, "a legacy signature without a Rekor entry (its dev.sigstore.cosign/bundle annotation); the scope's Rekor key must have logged it"
	}
	b, err := legacyBundle(s, sig)
	if err != nil {
		return "", 2, "a legacy signature's certificate or Rekor entry is malformed: " + err.Error()
	}
	how, reason := r.sigstore(b, verify.WithArtifact(bytes.NewReader(s.Payload)))
	if reason != "" {
		return "", 1, reason
	}
	return how, 0, ""
}
