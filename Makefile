# hotplug-agent. `make test` is what CI runs; `make quick` is the inner loop.
GO        ?= go
PREFIX    ?= /usr/local
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin/hotplug-agent
# A count of executions per fuzz target, not a duration: with a duration, Go 1.26's fuzzing
# coordinator can fail a target with a bare "context deadline exceeded" as the time runs out on a
# loaded machine (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME  ?= 100000x
RUN_ARGS  ?=

.PHONY: all build deps test quick lint fuzz run install man completions lib examples bench image image-context clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/hotplug-agent

# The full suite: formatting, vet, unit and integration tests with the race detector, and a
# short run of every fuzz target. Integration tests need root on Linux (they take a CPU of this
# machine offline and back, and write uevent files); as another user they skip and say why.
test: deps lint
	$(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

# What the tests need beyond Go (chromium, QEMU and a guest kernel, Prometheus), installed from
# Debian's packages, idempotently; cached downloads live in the ignored .cache/.
deps:
	bash scripts/test-deps.sh

# The C API: bin/libhotplug.so with capi/hotplug.h, and the example programs: the C ones linked to
# it (both include examples/c/stop.h, their SIGINT/SIGTERM self-pipe), and the Go worker pool.
lib:
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=c-shared -o bin/libhotplug.so ./capi
	rm -f bin/libhotplug.h   # cgo's generated header; capi/hotplug.h is the interface
examples: lib
	$(CC) -std=c11 -Wall -Wextra -O2 -I capi examples/c/monitor.c -Lbin -lhotplug -Wl,-rpath,'$$ORIGIN' -o bin/hotplug-monitor-c
	$(CC) -std=c11 -Wall -Wextra -O2 -pthread -I capi examples/c/workerpool.c -Lbin -lhotplug -Wl,-rpath,'$$ORIGIN' -o bin/hotplug-workerpool-c
	$(GO) build -o bin/hotplug-workerpool-go ./examples/workerpool

# The benchmarks of BENCHMARKS.md on this machine's real kernel, beside systemd-udevd (root; about
# four minutes; installs what it needs), then the figures in BENCHMARKS.md rewritten from them.
# BENCH="latency storm" runs some of them. Not part of `make test`.
bench:
	bash bench/run.sh $(BENCH)

# The inner loop: unit tests only, no kernel, no fuzzing.
quick:
	$(GO) test -short -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every fuzz target, FUZZTIME each (go test runs one -fuzz target per package at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Runs the agent on this host in the foreground, as any user: root is needed only to act on
# hotplug (reading uevents and sysfs needs none); as another user the agent keeps its state in
# ~/.local/state/hotplug-agent and says in one line what it cannot do.
# Endpoints: http://localhost:19100/{metrics,interfaces,events,memory,healthz}.
run: build
	./$(BIN) run $(RUN_ARGS)

# The man page and the bash and zsh completion scripts, which the agent renders from its own flags
# (kingpin's --help-man, --completion-script-bash and --completion-script-zsh). They are rendered by
# a binary for this machine, so that a package cross-built with GOOS/GOARCH gets them too, and the
# man page is dated by the last commit (SOURCE_DATE_EPOCH), so that it builds reproducibly.
MAN             := bin/hotplug-agent.1
BASH_COMPLETION := bin/completions/hotplug-agent
ZSH_COMPLETION  := bin/completions/_hotplug-agent
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
HOST_RUN = GOOS=$$($(GO) env GOHOSTOS) GOARCH=$$($(GO) env GOHOSTARCH) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	$(GO) run -trimpath -ldflags '-X main.version=$(VERSION)' ./cmd/hotplug-agent
man:
	@mkdir -p $(dir $(MAN))
	$(HOST_RUN) --help-man > $(MAN).tmp && mv $(MAN).tmp $(MAN)
completions:
	@mkdir -p $(dir $(BASH_COMPLETION))
	$(HOST_RUN) --completion-script-bash > $(BASH_COMPLETION).tmp && mv $(BASH_COMPLETION).tmp $(BASH_COMPLETION)
	$(HOST_RUN) --completion-script-zsh > $(ZSH_COMPLETION).tmp && mv $(ZSH_COMPLETION).tmp $(ZSH_COMPLETION)

# Installs the binary, the systemd unit (its ExecStart follows PREFIX), an example configuration
# (never over an existing one; it turns the online policy on, and says so), the docs, the man page
# and the completion scripts (MANDIR, BASHCOMPDIR, ZSHCOMPDIR: see uninstall below). DESTDIR stages
# the tree for a package. zsh finds ZSHCOMPDIR's default under /usr/local; Debian's zsh, under /usr,
# reads /usr/share/zsh/vendor-completions.
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= /lib/systemd/system
SYSCONFDIR ?= /etc
DOCDIR    ?= $(PREFIX)/share/doc/hotplug-agent
install: build man completions
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/hotplug-agent
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/hotplug-agent|$(BINDIR)/hotplug-agent|; s|/etc/hotplug-agent|$(SYSCONFDIR)/hotplug-agent|g' \
	  deploy/systemd/hotplug-agent.service > $(DESTDIR)$(UNITDIR)/hotplug-agent.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/hotplug-agent.service
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/hotplug-agent
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/hotplug-agent/config.yaml ]; then \
	  echo "kept the existing $(SYSCONFDIR)/hotplug-agent/config.yaml (the example is in $(DOCDIR))"; \
	else \
	  install -m 0644 deploy/config.example.yaml $(DESTDIR)$(SYSCONFDIR)/hotplug-agent/config.yaml && \
	  echo "installed $(SYSCONFDIR)/hotplug-agent/config.yaml, the example configuration: it turns the online policy on (cpu: online, memory: auto), so the agent brings hot-added CPUs and memory online (the agent's own default is none); edit its online: section to change that."; \
	fi
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -D -m 0644 deploy/config.example.yaml $(DESTDIR)$(DOCDIR)/config.example.yaml
	install -D -m 0644 $(MAN) $(DESTDIR)$(MANDIR)/man1/hotplug-agent.1
	install -D -m 0644 $(BASH_COMPLETION) $(DESTDIR)$(BASHCOMPDIR)/hotplug-agent
	install -D -m 0644 $(ZSH_COMPLETION) $(DESTDIR)$(ZSHCOMPDIR)/_hotplug-agent

# The container image of deploy/container/Containerfile, for the DaemonSet in deploy/kubernetes:
# the static binary and the CA certificates (Debian's ca-certificates) on an empty base, so it
# builds offline with podman, or buildah, whichever is installed. image-context stages the build
# context alone: the DaemonSet's test builds the container's root from it without either.
IMAGE         ?= hotplug-agent:latest
IMAGE_CONTEXT ?= bin/image
CA_CERTS      ?= /etc/ssl/certs/ca-certificates.crt
image-context: build
	@[ -r $(CA_CERTS) ] || { echo "image: $(CA_CERTS) is missing: install Debian's ca-certificates, or set CA_CERTS"; exit 1; }
	rm -rf $(IMAGE_CONTEXT)
	install -D -m 0755 $(BIN) $(IMAGE_CONTEXT)/hotplug-agent
	install -m 0644 $(CA_CERTS) $(IMAGE_CONTEXT)/ca-certificates.crt
	install -m 0644 deploy/container/Containerfile $(IMAGE_CONTEXT)/Containerfile
image: image-context
	@if command -v podman >/dev/null; then \
	  podman build --label org.opencontainers.image.version=$(VERSION) -t $(IMAGE) $(IMAGE_CONTEXT); \
	elif command -v buildah >/dev/null; then \
	  buildah build --label org.opencontainers.image.version=$(VERSION) -t $(IMAGE) $(IMAGE_CONTEXT); \
	else \
	  echo "image: neither podman nor buildah is installed (Debian packages podman, buildah); the build context is ready in $(IMAGE_CONTEXT)"; exit 1; \
	fi
	@echo "image $(IMAGE) built; to load it on a node: podman save $(IMAGE) | ctr -n k8s.io images import -"

clean:
	rm -rf bin

# The .deb and .rpm of the static binary in PKGDIR (bin/hotplug-agent_*.deb, bin/hotplug-agent-*.rpm),
# built by nfpm (a Go library pinned in go.mod) from deploy/package/nfpm.yaml: the unit (ExecStart
# /usr/bin/hotplug-agent), the example configuration as a conffile, the docs, and the man page and
# shell completions when the binary can print them (--help-man); the Debian package enables and
# starts the service as dh_installsystemd's scripts do. The packager runs on this machine whatever
# GOOS and GOARCH the binary is built for.
PKGDIR ?= bin
.PHONY: package uninstall
package: build
	rm -f $(PKGDIR)/hotplug-agent_*.deb $(PKGDIR)/hotplug-agent-*.rpm
	GOOS= GOARCH= $(GO) run ./deploy/package -bin $(BIN) -version '$(VERSION)' -out $(PKGDIR)

# Removes what `make install` installed; give it the same PREFIX, BINDIR, UNITDIR, SYSCONFDIR,
# DOCDIR and DESTDIR (MANDIR, BASHCOMPDIR, ZSHCOMPDIR: the man page and completions). It keeps
# /etc/hotplug-agent/config.yaml unless it is still the example, and the agent's state, and says
# so. It stops nothing: run `systemctl disable --now hotplug-agent` first.
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
uninstall:
	@echo "uninstall: this stops no service; if hotplug-agent runs, first: systemctl disable --now hotplug-agent"
	rm -f $(DESTDIR)$(BINDIR)/hotplug-agent $(DESTDIR)$(UNITDIR)/hotplug-agent.service
	rm -f $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/config.example.yaml
	rm -f $(DESTDIR)$(MANDIR)/man1/hotplug-agent.1 $(DESTDIR)$(MANDIR)/man1/hotplug-agent.1.gz
	rm -f $(DESTDIR)$(BASHCOMPDIR)/hotplug-agent $(DESTDIR)$(ZSHCOMPDIR)/_hotplug-agent
	@rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	@cfg=$(DESTDIR)$(SYSCONFDIR)/hotplug-agent/config.yaml; \
	if [ -e $$cfg ] && cmp -s $$cfg deploy/config.example.yaml; then \
	  rm -f $$cfg && echo "removed $(SYSCONFDIR)/hotplug-agent/config.yaml, the example configuration"; \
	elif [ -e $$cfg ]; then \
	  echo "kept $(SYSCONFDIR)/hotplug-agent/config.yaml: it differs from deploy/config.example.yaml; remove it yourself if you no longer need it"; \
	fi; \
	rmdir $(DESTDIR)$(SYSCONFDIR)/hotplug-agent 2>/dev/null || true
	@if [ -d $(DESTDIR)/var/lib/hotplug-agent ]; then \
	  echo "kept /var/lib/hotplug-agent, the agent's state; remove it yourself if you no longer need it"; \
	fi
	@if [ -L $(DESTDIR)/etc/systemd/system/multi-user.target.wants/hotplug-agent.service ]; then \
	  echo "hotplug-agent.service is still enabled: systemctl disable hotplug-agent removes its link"; \
	fi
	@if [ -z "$(DESTDIR)" ]; then echo "then: systemctl daemon-reload"; fi
