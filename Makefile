# libleak: `make` builds build/libleak.so and build/leakanalyze.
# `make demo` traces a leaky test program and analyzes it; `make test` runs
# every test; `make bench` compares libleak with its peers.

GO      ?= go
BUILD   := build
SHIM_SRC := $(wildcard shim/*.c shim/*.h shim/*.go)
GO_SRC  := $(shell find analyzer cmd internal -name '*.go' -not -name '*_test.go' 2>/dev/null) go.mod go.sum

.PHONY: all deps demo test gate bench clean

all: deps $(BUILD)/libleak.so $(BUILD)/leakanalyze

# libunwind (Debian's libunwind8) is optional: LEAK_UNWIND=libunwind loads
# it at run time, the shim falls back to it on a glibc without
# _dl_find_object, and tests compare the default unwinder with it. Install
# it when missing; without it those uses fall back or skip.
deps:
	@if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libunwind.so.8 '; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libunwind8 (optional unwinder, used by tests)"; \
	    (apt-get install -y -q libunwind8 >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libunwind8 >/dev/null)) || \
	     echo "warning: could not install libunwind8; LEAK_UNWIND=libunwind will fall back"; \
	  else \
	    echo "note: libunwind.so.8 not found (apt-get install libunwind8): LEAK_UNWIND=libunwind unavailable"; \
	  fi; \
	fi

$(BUILD)/libleak.so: $(SHIM_SRC) go.mod go.sum
	@mkdir -p $(BUILD)
	$(GO) build -buildmode=c-shared -o $@ ./shim
	@rm -f $(BUILD)/libleak.h

# go build optimizes with cmd/leakanalyze/default.pgo, a CPU profile of
# leakanalyze --format json on an alloc_bench trace (made with
# LEAKANALYZE_CPUPROFILE=FILE; see docs/benchmarks.md).
$(BUILD)/leakanalyze: $(GO_SRC) cmd/leakanalyze/default.pgo
	@mkdir -p $(BUILD)
	$(GO) build -o $@ ./cmd/leakanalyze

$(BUILD)/demo/fib_thread: testprogs/fib_thread.c
	@mkdir -p $(BUILD)/demo
	gcc -g -O0 -pthread -o $@ $<

demo: all $(BUILD)/demo/fib_thread
	@rm -f $(BUILD)/demo/*.zst
	LD_PRELOAD=$(CURDIR)/$(BUILD)/libleak.so LEAK_OUT=$(BUILD)/demo $(BUILD)/demo/fib_thread 10
	$(BUILD)/leakanalyze $(BUILD)/demo/leak.fib_thread.*.zst

test: all
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...
	$(MAKE) --no-print-directory gate

# The project's own clean programs must pass its own leak gate.
gate: all
	@mkdir -p $(BUILD)/gate
	gcc -g -O1 -pthread -o $(BUILD)/gate/clean testprogs/clean.c
	$(BUILD)/leakanalyze run -- sh -c '$(BUILD)/gate/clean >/dev/null && ls / >/dev/null'

bench: all
	$(GO) run ./internal/bench

clean:
	rm -rf $(BUILD)
