// Package journal is rootswap's log output: a log/slog logger that writes
// to the systemd journal, with priorities and searchable fields, when
// stderr is connected to it, and plain text on stderr otherwise.
//
// Vocabulary: a record's attributes named machine, digest and generation
// become the journal fields ROOTSWAP_MACHINE=, ROOTSWAP_DIGEST= and
// ROOTSWAP_GENERATION= (`journalctl ROOTSWAP_MACHINE=web`); every
// attribute also stays in the message text. SYSLOG_IDENTIFIER is
// "rootswap".
package journal
