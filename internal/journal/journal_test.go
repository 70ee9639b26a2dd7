package journal

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	sd "github.com/coreos/go-systemd/v22/journal"
)

func TestJournalEntry(t *testing.T) {
	h := &handler{level: slog.LevelInfo}
	h2 := h.WithAttrs([]slog.Attr{slog.String("machine", "web")}).(*handler)
	r := slog.NewRecord(time.Now(), slog.LevelWarn, "rolled back", 0)
	r.AddAttrs(slog.String("digest", "sha256:ab"), slog.Uint64("generation", 3), slog.String("other", "x y"))
	msg, pri, vars := h2.entry(r)
	if pri != sd.PriWarning {
		t.Errorf("priority %d, want warning", pri)
	}
	for k, v := range map[string]string{"ROOTSWAP_MACHINE": "web", "ROOTSWAP_DIGEST": "sha256:ab", "ROOTSWAP_GENERATION": "3", "SYSLOG_IDENTIFIER": "rootswap"} {
		if vars[k] != v {
			t.Errorf("%s=%q, want %q", k, vars[k], v)
		}
	}
	if !strings.Contains(msg, `rolled back machine="web"`) || !strings.Contains(msg, `other="x y"`) {
		t.Errorf("message %q", msg)
	}
	if h.Enabled(context.Background(), slog.LevelDebug) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("level filter")
	}
	for l, want := range map[slog.Level]sd.Priority{slog.LevelDebug: sd.PriDebug, slog.LevelInfo: sd.PriInfo, slog.LevelError: sd.PriErr} {
		if priority(l) != want {
			t.Errorf("priority(%v) = %d", l, priority(l))
		}
	}
}
