package snapshot

import (
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestDescribedDocument: a config the daemon described field by field is
// recorded as an OCI document with the HEALTHCHECK under "config", where
// Docker's own documents hold it; a source's own document is kept as it
// is, and only if its digest is the image's.
func TestDescribedDocument(t *testing.T) {
	oci := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config: ocispec.ImageConfig{Entrypoint: []string{"/app"}}}
	hc := json.RawMessage(`{"Test":["CMD","/app","check"],"Interval":5000000000}`)
	raw, err := configDocument(digest.FromString("x"), Config{OCI: oci, Healthcheck: hc})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OS     string `json:"os"`
		Config struct {
			Entrypoint  []string
			Healthcheck json.RawMessage
		} `json:"config"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OS != "linux" || len(doc.Config.Entrypoint) != 1 || string(doc.Config.Healthcheck) != string(hc) {
		t.Errorf("document %s", raw)
	}
	// No healthcheck: the OCI fields alone.
	doc.Config.Healthcheck = nil
	if raw, err := configDocument(digest.FromString("x"), Config{OCI: oci}); err != nil || json.Unmarshal(raw, &doc) != nil || doc.Config.Healthcheck != nil {
		t.Errorf("without a healthcheck: %s, %v", raw, err)
	}
	own := []byte(`{"os":"linux"}`)
	if got, err := configDocument(digest.FromBytes(own), Config{Raw: own, Healthcheck: hc}); err != nil || string(got) != string(own) {
		t.Errorf("a source's own document: %s, %v", got, err)
	}
	if _, err := configDocument(digest.FromString("other"), Config{Raw: own}); err == nil {
		t.Error("a document whose digest is not the image's was taken")
	}
}
