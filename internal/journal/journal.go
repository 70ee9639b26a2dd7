package journal

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	sd "github.com/coreos/go-systemd/v22/journal"
)

// NewLogger logs to the journal, with priorities and ROOTSWAP_* fields,
// when stderr is connected to it (JOURNAL_STREAM matches), and as plain
// text on stderr otherwise.
func NewLogger(level slog.Level) *slog.Logger { return NewLoggerTo(level, os.Stderr) }

// NewLoggerTo is NewLogger with plain text going to w, which must be
// stderr or write to it (a terminal's progress area, which clears its
// line first): whether the journal is used depends on stderr.
func NewLoggerTo(level slog.Level, w io.Writer) *slog.Logger {
	if toJournal() {
		return slog.New(&handler{level: level})
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // the journal or the terminal has the time
			}
			return a
		}}))
}

func toJournal() bool {
	ok, err := sd.StderrIsJournalStream()
	return err == nil && ok && sd.Enabled()
}

// handler sends each record as one journal entry. Attributes named
// machine, digest and generation become ROOTSWAP_MACHINE=, ROOTSWAP_DIGEST=
// and ROOTSWAP_GENERATION= fields, so `journalctl ROOTSWAP_MACHINE=web`
// finds them; all attributes are also kept in the message text.
type handler struct {
	level slog.Level
	attrs []slog.Attr
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	msg, pri, vars := h.entry(r)
	return sd.Send(msg, pri, vars)
}

// entry turns a record into a journal message, priority and fields.
func (h *handler) entry(r slog.Record) (string, sd.Priority, map[string]string) {
	var msg strings.Builder
	msg.WriteString(r.Message)
	vars := map[string]string{"SYSLOG_IDENTIFIER": "rootswap"}
	add := func(a slog.Attr) bool {
		v := a.Value.String()
		fmt.Fprintf(&msg, " %s=%q", a.Key, v)
		switch a.Key {
		case "machine", "digest", "generation":
			vars["ROOTSWAP_"+strings.ToUpper(a.Key)] = v
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	return msg.String(), priority(r.Level), vars
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{level: h.level, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *handler) WithGroup(string) slog.Handler { return h }

func priority(l slog.Level) sd.Priority {
	switch {
	case l >= slog.LevelError:
		return sd.PriErr
	case l >= slog.LevelWarn:
		return sd.PriWarning
	case l >= slog.LevelInfo:
		return sd.PriInfo
	}
	return sd.PriDebug
}

// ErrorPrefix makes the final error line an error-priority journal entry:
// journald reads a "<3>" prefix on a stream line as the priority.
func ErrorPrefix() string {
	if toJournal() {
		return "<3>"
	}
	return ""
}
