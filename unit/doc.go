// Package unit writes the systemd units that run rootswap: a machine's
// service (rootswap-NAME.service), the alternative for
// systemd-nspawn@.service users (a drop-in, and NAME.nspawn, written by
// WriteSettings at each start from the current image and the unit's
// command, if any), the daily
// gc service and timer, and the update service and timer (a low-priority
// `rootswap update` of the machines marked --auto-update). It is its own package, not part of activate,
// because it activates nothing: it describes how systemd calls the
// rootswap binary, which then prepares and runs the machine.
//
// Vocabulary:
//   - a File is one unit named relative to the unit directory
//     (/etc/systemd/system);
//   - a Spec is one machine's service: name, image, command, the nspawn
//     choices (activate.NspawnOptions, which spells and checks them) and
//     restart timing;
//   - bin and root are the absolute paths of the rootswap binary and of
//     the store that every generated command line names.
//
// Escaping is the package's main contract: every argument, --setenv
// value and nspawn option reaches the program exactly as given, whatever
// quotes, "%" specifiers, "$" variables, backslashes or blanks it holds
// (execLine for Exec*= lines, settingsWords for .nspawn files). What no
// file format can carry is refused with an error wrapping ErrInvalid;
// nothing is silently altered. Install replaces each unit atomically.
//
// Inside this package, unit.X is go-systemd's unit package (the file
// serialiser), imported under its own name to keep the moved code as it
// was; callers never see it except as the options inside a File.
package unit
