// Package policy decides which images rootswap may run: a signature
// policy in the format of containers-policy.json(5), the file Podman and
// CRI-O read (/etc/containers/policy.json), and the key-based check of
// cosign's legacy signatures against it.
//
// Vocabulary:
//   - a scope names the images a list of requirements applies to: for the
//     docker transport a host[:port], a host/namespace, a repository or a
//     repository:tag (the longest that matches wins; then "*.domain"
//     wildcards, most specific first; then the transport's "" scope; then
//     the policy's default).
//   - a requirement is one of insecureAcceptAnything, reject and
//     sigstoreSigned (with public keys: keyPath, keyPaths or keyData, and
//     a signedIdentity rule). Every requirement of a scope must hold.
//     Any other requirement (signedBy, fulcio, pki, remapIdentity, …) is
//     an error naming it when the policy is loaded, never a silent pass.
//   - a signature is cosign's simple-signing payload (a JSON document
//     naming the manifest digest and the docker reference signed) and its
//     signature; the payload's digest must be the manifest digest pulled,
//     its reference must satisfy signedIdentity, and the signature must
//     verify with one of the scope's keys (ECDSA, Ed25519 or RSA, PEM).
//   - an admission says which scope and requirement admitted an image and
//     how (the key's fingerprint); a rejection says why not.
//
// This package reads files and verifies signatures; fetching them is the
// image source's business (snapshot/registry), handed in as a function.
package policy
