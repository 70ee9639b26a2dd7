// Package policy decides which images rootswap may run: a signature
// policy in the format of containers-policy.json(5), the file Podman and
// CRI-O read (/etc/containers/policy.json), and the check of cosign's
// signatures against it: legacy ones and Sigstore bundles.
//
// Vocabulary:
//   - a scope names the images a list of requirements applies to: for the
//     docker transport a host[:port], a host/namespace, a repository or a
//     repository:tag (the longest that matches wins; then "*.domain"
//     wildcards, most specific first; then the transport's "" scope; then
//     the policy's default).
//   - a requirement is one of insecureAcceptAnything, reject and
//     sigstoreSigned (with public keys: keyPath, keyPaths or keyData; or
//     keyless: fulcio's caPath/caData, oidcIssuer and subjectEmail; an
//     optional Rekor key, required with fulcio; a signedIdentity rule).
//     Every requirement of a scope must hold. Any other requirement
//     (signedBy, pki, remapIdentity, …) is an error naming it when the
//     policy is loaded, never a silent pass.
//   - a legacy signature is cosign's simple-signing payload (a JSON
//     document naming the manifest digest and the docker reference
//     signed) and its signature; the payload's digest must be the
//     manifest digest pulled, its reference must satisfy signedIdentity,
//     and the signature must verify with one of the scope's keys (ECDSA,
//     Ed25519 or RSA, PEM). Under a Rekor key or a Fulcio CA (cosign v2's
//     keyless signatures), its annotations' certificate, chain and Rekor
//     entry are checked as a bundle's are.
//   - a Sigstore bundle (cosign v3) signs the manifest digest alone: a
//     DSSE in-toto statement of cosign's signature predicate whose subject
//     is the digest, or a message signature over it. sigstore-go checks it
//     offline against the scope's key, or against its Fulcio CA (the
//     certificate valid when the Rekor entry's signed timestamp says it was
//     logged) and then its issuer and subject (an email or a URI SAN).
//     A bundle names no docker reference: the match* identity rules hold
//     for the image it is attached to, exactReference and exactRepository
//     cannot.
//   - an admission says which scope and requirement admitted an image and
//     how (the key's fingerprint, or the CA's and the certificate's
//     identity, and the Rekor key); a rejection says why not.
//
// This package reads files and verifies signatures; fetching them is the
// image source's business (snapshot/registry), handed in as a function.
package policy
