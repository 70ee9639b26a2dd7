# rootswap: build, test and demo. `make test` and `make demo` run as root:
# they install packages (scripts/deps.sh) and start a private Docker daemon
# (scripts/dockerd.sh) that they stop again, even when a step fails; a
# private daemon that was already running is left running.

BIN    := bin/rootswap
VERIFY := $(dir $(BIN))rootswap-verify
GO     ?= go

.PHONY: build man install test fuzz bench bench-quick bench-registry-quick demo deps vet fmt clean

# -buildvcs=auto: this machine's go env sets -buildvcs=false, which would
# leave `rootswap --version` without the revision it was built from.
# CGO_ENABLED=0: a static binary, since `run` bind-mounts it into every
# container as the payload's init, whatever C library the image has (or none).
# rootswap-verify, beside it, checks Sigstore signatures for it
# (sigstore-go lives there alone, so that rootswap stays small and starts
# fast); rootswap looks for it in its own directory.
build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN) ./cmd/rootswap
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(VERIFY) ./cmd/rootswap-verify

# Man pages, one per command, generated from the commands' help
# (cobra's doc generator, through the hidden `rootswap man DIR`); set
# SOURCE_DATE_EPOCH for a reproducible date.
man: build
	rm -rf man && $(BIN) man man

# Installs the binaries (rootswap and rootswap-verify), the man pages and bash, zsh and fish completion
# under $(DESTDIR)$(PREFIX). Units that `rootswap unit` writes name the
# binary they were written by, so write them with the installed one.
PREFIX  ?= /usr/local
DESTDIR ?=
install: build man
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/rootswap
	install -m 0755 $(VERIFY) $(DESTDIR)$(PREFIX)/bin/rootswap-verify
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	$(BIN) completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/rootswap
	$(BIN) completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_rootswap
	$(BIN) completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/rootswap.fish

deps:
	scripts/deps.sh

# dockerd.sh run: start the daemon if needed, run the command with
# DOCKER_HOST pointing at it, stop the daemon if it started it, and exit
# with the command's status.
test: deps build
	scripts/dockerd.sh run env ROOTSWAP_INTEGRATION=1 ROOTSWAP_BIN=$(CURDIR)/$(BIN) \
		$(GO) test -count=1 -timeout 45m ./...
	$(MAKE) fuzz
	$(MAKE) bench-quick

# A short fuzz of the tar extractor (10-30 s here) and of the layer merge
# (a few seconds: no disk); run longer by hand,
# e.g. make fuzz FUZZTIME=200000x. The budgets are execution counts: with
# a duration, go1.26's fuzz coordinator sometimes fails the run with a bare
# "context deadline exceeded" as the time runs out (go.dev/issue/75804).
# /dev/shm keeps each execution cheap.
FUZZTIME ?= 4000x
fuzz:
	TMPDIR=/dev/shm $(GO) test ./snapshot -run '^$$' -fuzz '^FuzzExtract$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x
	TMPDIR=/dev/shm $(GO) test ./snapshot -run '^$$' -fuzz '^FuzzMerge$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x

# The benchmark against the docker export | tar chain (bench/): the full
# run builds a Debian and a 1 GB image and takes most of an hour; results
# go to bench/results/. bench-quick is its smoke test on a small image,
# run by `make test`, with results in a temporary directory.
bench:
	scripts/bench.sh

bench-quick:
	d=$$(mktemp -d) && BENCH_GO=0 scripts/bench.sh --quick --out $$d && rm -rf $$d

# The registry scenarios on the small image, a minute or two (installs
# podman, skopeo and umoci; not part of `make test`). It prints
# results.md and leaves it in a temporary directory it names.
bench-registry-quick:
	BENCH_GO=0 scripts/bench.sh --quick --scenarios pull --out $$(mktemp -d /tmp/rootswap-bench-registry-XXXX)

demo: deps build
	scripts/dockerd.sh run scripts/demo.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w .

clean:
	rm -rf bin man
