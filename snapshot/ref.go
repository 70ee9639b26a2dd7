package snapshot

// Transport is how a reference reaches its image, named as
// containers-transports(5) names it.
type Transport string

// The transports rootswap reads. The edge (cmd/rootswap) holds the table
// that parses each one's references and opens its source.
const (
	Docker        Transport = "docker"         // docker://HOST/REPO:TAG or …@sha256:…: a registry
	OCI           Transport = "oci"            // oci:PATH[:TAG]: an OCI image layout
	OCIArchive    Transport = "oci-archive"    // oci-archive:PATH[:TAG]: a tar of an OCI image layout
	DockerArchive Transport = "docker-archive" // docker-archive:PATH[:REF]: a `docker save` tarball
	DockerDaemon  Transport = "docker-daemon"  // docker-daemon:REF, or a bare REF: the Docker daemon
)

// Ref is an image reference, parsed once where it enters (the command
// line, a unit) and passed inward as this value: which transport, and
// the parts that transport reads. A Ref made by its transport's parser
// is valid for it; sources do not parse it again.
type Ref struct {
	Transport Transport
	// Name is what a registry or the daemon is asked for: HOST/REPO:TAG
	// or HOST/REPO@sha256:… (docker); a tag, name@digest or image ID
	// (docker-daemon). Empty for the file transports.
	Name string
	// Path is the layout directory (oci) or the tarball (oci-archive,
	// docker-archive), as typed.
	Path string
	// Tag picks one image of Path: oci's and oci-archive's TAG (an
	// org.opencontainers.image.ref.name), docker-archive's REF (a
	// REPO:TAG of its manifest.json). "" picks Path's only image.
	Tag string
	// Bare is set for a docker-daemon reference typed without its
	// transport, so that String gives it back as typed.
	Bare bool
}

// String is the reference as rootswap writes it in records, units and
// messages: the transport's prefix and its parts, so that parsing it
// again gives the same Ref.
func (r Ref) String() string {
	switch r.Transport {
	case Docker:
		return "docker://" + r.Name
	case DockerDaemon:
		if r.Bare {
			return r.Name
		}
		return "docker-daemon:" + r.Name
	}
	s := string(r.Transport) + ":" + r.Path
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	return s
}
