# edge — build, run, test, bench.
#   make            build ./edge (release)
#   make run        install deps, build, make dev certs, serve lua/default.lua on :8443
#   make test       install deps, build release + ASan/UBSan, run every spec
#   make bench      benchmark (scripts/bench.sh; BENCH_ARGS="--peer" for the nginx peer)
#   make asan       build build/asan/edge with AddressSanitizer + UBSan
#   make install    install under PREFIX (default /usr/local; DESTDIR for staging); make uninstall
#   SANITIZE=address,undefined make   any sanitizer set into ./edge;  V=1 for verbose

CC      ?= cc
BUILD   ?= build/release
SANITIZE ?=
LLHTTP_DIR  := /usr/share/llhttp
LLHTTP_INC  := /usr/share/include/llhttp

PKGS    := lua5.4 openssl libnghttp2 libcares zlib libbrotlienc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo "-llua5.4 -lssl -lcrypto -lnghttp2 -lcares -lz -lbrotlienc")

OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE $(OPT) -fno-omit-frame-pointer -pthread -MMD -MP \
               $(PKG_CFLAGS) -I$(LLHTTP_INC) -Isrc
ifneq ($(SANITIZE),)
  CFLAGS_BASE += -fsanitize=$(SANITIZE) -fno-sanitize-recover=undefined
  LDSAN := -fsanitize=$(SANITIZE)
endif
LDLIBS  := $(PKG_LIBS) -lev -lm -pthread

# The server: every src/*.c except the Lua-module entry point.
SRCS    := $(filter-out src/lua_module.c,$(wildcard src/*.c))
OBJS    := $(SRCS:src/%.c=$(BUILD)/%.o)
LLHTTP_OBJS := $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
# The same Lua-facing C code, built as a Lua module (require "edge") for busted unit specs.
# edge.fetch in it is the server's client on a private loop: upstream code, resolver, the TLS client
# context and llhttp (compiled with -fPIC) come along; Lua itself comes from the host interpreter.
MOD_SRCS := src/lua_module.c src/lua_edge.c src/log.c src/cache.c src/cache_tags.c src/cache_purge.c src/request.c src/buf.c src/alloc.c src/lua_response.c src/lua_req.c \
            src/balancer.c src/lua_upstream.c src/lua_upstream_opts.c \
            src/lua_fetch.c src/upstream_fetch.c src/upstream_named.c src/upstream_conn.c src/upstream_pool.c src/resolver.c \
            src/tls.c src/tls_certs.c src/tls_cert_files.c src/tls_tickets.c src/metrics.c src/listener.c src/body_pipe.c src/lua_body_stream.c \
            src/shared_dict.c src/size.c src/lua_shared.c src/lua_limit.c
MOD_OBJS := $(MOD_SRCS:src/%.c=build/lua-obj/%.o) build/lua-obj/llhttp/api.o build/lua-obj/llhttp/http.o \
            build/lua-obj/llhttp/llhttp.o
MOD_LIBS := $(shell pkg-config --libs openssl libcares 2>/dev/null || echo "-lssl -lcrypto -lcares") -lev -lm -pthread

ifeq ($(V),1)
  Q :=
else
  Q := @
endif

.PHONY: all deps certs run test asan lua-module bench clean
all: edge

edge: $(BUILD)/edge
	$(Q)cp $< $@.tmp && mv -f $@.tmp $@   # rename: works while ./edge runs

$(BUILD)/edge: $(OBJS) $(LLHTTP_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: src/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_BASE) $(WARN) -c -o $@ $<

# Third-party C from the node-llhttp package: compiled in, never copied into the repo.
$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_BASE) -DLLHTTP_STRICT_MODE=1 -w -c -o $@ $<

asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=address,undefined OPT="-O1 -g" build/asan/edge

lua-module: build/lua/edge.so
build/lua/edge.so: $(MOD_OBJS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) -shared -o $@ $^ $(MOD_LIBS)
build/lua-obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (module)"
	$(Q)$(CC) $(CFLAGS_BASE) $(WARN) $(CFLAGS) -fPIC -DEDGE_LUA_MODULE -c -o $@ $<
build/lua-obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (module)"
	$(Q)$(CC) $(CFLAGS_BASE) -fPIC -DLLHTTP_STRICT_MODE=1 -w -c -o $@ $<

# The cache stress test (spec/c/cache_stress.c, run by spec/cache_stress_spec.lua):
# 8 threads on one shard, built under ThreadSanitizer and under ASan + UBSan.
.PHONY: cache-stress
STRESS_SRCS := spec/c/cache_stress.c src/cache.c src/cache_tags.c src/cache_purge.c src/request.c src/buf.c src/alloc.c src/body_pipe.c
STRESS_CFLAGS := -std=c11 -D_GNU_SOURCE -Isrc -pthread -O1 -g -fno-omit-frame-pointer \
                 $(shell pkg-config --cflags lua5.4 2>/dev/null) $(WARN)
cache-stress: build/test/cache_stress_tsan build/test/cache_stress_asan
build/test/cache_stress_tsan: $(STRESS_SRCS) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -fsanitize=thread -o $@ $(STRESS_SRCS)
build/test/cache_stress_asan: $(STRESS_SRCS) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=undefined -o $@ $(STRESS_SRCS)

# The cache's lifetimes, tags, derived keys and purges (spec/c/cache_life_test.c, run by
# spec/cache_life_spec.lua): built plain and under ASan + UBSan.
.PHONY: cache-life-test
CACHE_LIFE_SRCS := spec/c/cache_life_test.c src/cache.c src/cache_tags.c src/cache_purge.c src/request.c src/buf.c \
                   src/alloc.c src/body_pipe.c
cache-life-test: build/test/cache_life_test build/test/cache_life_test_asan build/test/cache_purge_bench
build/test/cache_life_test: $(CACHE_LIFE_SRCS) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -o $@ $(CACHE_LIFE_SRCS) -lm
build/test/cache_life_test_asan: $(CACHE_LIFE_SRCS) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=undefined -o $@ $(CACHE_LIFE_SRCS) -lm

# Purging many entries, measured (spec/c/cache_purge_bench.c, which #includes the cache's
# sources to time their lock holds): `build/test/cache_purge_bench [ENTRIES [TAGGED]]`.
.PHONY: cache-purge-bench
PURGE_BENCH_SRCS := spec/c/cache_purge_bench.c src/request.c src/buf.c src/alloc.c src/body_pipe.c
cache-purge-bench: build/test/cache_purge_bench
build/test/cache_purge_bench: $(PURGE_BENCH_SRCS) src/cache.c src/cache_tags.c src/cache_purge.c $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -O2 -o $@ $(PURGE_BENCH_SRCS)

# The resolver driver (spec/c/resolver_driver.c, run by spec/resolver_spec.lua):
# src/resolver.c on its own ev loop, built plain and under ASan + UBSan.
.PHONY: resolver-driver
DRIVER_SRCS := spec/c/resolver_driver.c src/resolver.c src/log.c src/alloc.c
DRIVER_CFLAGS := -std=c11 -D_GNU_SOURCE -Isrc -O1 -g -fno-omit-frame-pointer $(WARN)
DRIVER_LIBS := -lcares -lev -lm
resolver-driver: build/test/resolver_driver build/test/resolver_driver_asan
build/test/resolver_driver: $(DRIVER_SRCS) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(DRIVER_CFLAGS) -o $@ $(DRIVER_SRCS) $(DRIVER_LIBS)
build/test/resolver_driver_asan: $(DRIVER_SRCS) $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(DRIVER_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=undefined -o $@ $(DRIVER_SRCS) $(DRIVER_LIBS)

# The balancer's C properties (spec/c/balancer_test.c, run by spec/balancer_spec.lua):
# built plain and under ASan + UBSan.
.PHONY: balancer-test
BALANCER_TEST_SRCS := spec/c/balancer_test.c src/balancer.c src/alloc.c
balancer-test: build/test/balancer_test build/test/balancer_test_asan
build/test/balancer_test: $(BALANCER_TEST_SRCS) src/balancer.h src/common.h
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -o $@ $(BALANCER_TEST_SRCS)
build/test/balancer_test_asan: $(BALANCER_TEST_SRCS) src/balancer.h src/common.h
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=undefined -o $@ $(BALANCER_TEST_SRCS)

# The shared dictionaries under 8 threads (spec/c/shared_dict_test.c, run by
# spec/shared_dict_unit_spec.lua): built under ThreadSanitizer and under ASan + UBSan.
.PHONY: shared-dict-test
SHDICT_TEST_SRCS := spec/c/shared_dict_test.c src/shared_dict.c src/size.c src/alloc.c
shared-dict-test: build/test/shared_dict_test_tsan build/test/shared_dict_test_asan
build/test/shared_dict_test_tsan: $(SHDICT_TEST_SRCS) src/shared_dict.h src/common.h
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -fsanitize=thread -o $@ $(SHDICT_TEST_SRCS) -lm
build/test/shared_dict_test_asan: $(SHDICT_TEST_SRCS) src/shared_dict.h src/common.h
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(STRESS_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=undefined -o $@ $(SHDICT_TEST_SRCS) -lm

# Many idle TLS connections held open (spec/c/idle_tls.c, run by
# spec/memory_idle_spec.lua and scripts/bench.sh's idle scenario).
.PHONY: idle-tls
idle-tls: build/test/idle_tls
build/test/idle_tls: spec/c/idle_tls.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) -std=c11 -O2 $(WARN) -o $@ $< -lssl -lcrypto

deps:
	$(Q)scripts/install-deps.sh

certs:
	$(Q)scripts/gen-certs.sh

run: deps
	$(Q)$(MAKE) --no-print-directory edge
	$(Q)scripts/gen-certs.sh
	./edge -s lua/default.lua

test: deps
	$(Q)$(MAKE) --no-print-directory edge asan lua-module cache-stress cache-life-test resolver-driver balancer-test shared-dict-test idle-tls fuzz-build
	$(Q)scripts/gen-certs.sh
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/test.sh

bench: deps
	$(Q)scripts/install-deps.sh --peer
	$(Q)$(MAKE) --no-print-directory edge
	$(Q)scripts/gen-certs.sh
	$(Q)scripts/bench.sh $(BENCH_ARGS)

clean:
	rm -rf build edge

-include $(OBJS:.o=.d) $(LLHTTP_OBJS:.o=.d) $(MOD_OBJS:.o=.d)

# ---- Installing ----
#   make install [PREFIX=/usr/local] [DESTDIR=/staging]     make uninstall (same variables)
# PREFIX/bin/edge finds its Lua libraries in PREFIX/share/lua/5.4 (from its own
# path, so a DESTDIR tree works where it lands); there, and the edge module in
# PREFIX/lib/lua/5.4, are where Lua 5.4 looks by default for PREFIX /usr/local
# or /usr, so plain `busted` finds require "edge" and require "edge.router".
# `make install-lua LUADIR=... CMODDIR=...` installs only those two (luarocks:
# scripts/edge-dev-1.rockspec).
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
LUADIR   ?= $(PREFIX)/share/lua/5.4
CMODDIR  ?= $(PREFIX)/lib/lua/5.4
DATADIR  ?= $(PREFIX)/share/edge
MANDIR   ?= $(PREFIX)/share/man/man1
# systemd finds units in /usr/lib/systemd/system (= /lib/systemd/system on
# merged-/usr Debian) and /etc/systemd/system; for PREFIX=/usr/local, pass
# UNITDIR=/etc/systemd/system. logrotate reads /etc/logrotate.d only.
UNITDIR  ?= $(PREFIX)/lib/systemd/system
LOGROTATEDIR ?= /etc/logrotate.d
LUA_LIBS := $(wildcard lua/edge/*.lua lua/edge/testing/*.lua)
EXAMPLES := $(wildcard lua/examples/*.lua)
VERSION  := $(shell sed -n 's/^\#define EDGE_VERSION "\(.*\)"/\1/p' src/common.h)
INSTALLED_LUA := $(LUA_LIBS:lua/%=$(DESTDIR)$(LUADIR)/%)

.PHONY: install install-lua uninstall man
man: build/man/edge.1
build/man/edge.1: README.md scripts/gen-man.lua src/common.h
	@mkdir -p $(dir $@)
	@echo "  MAN     $@"
	$(Q)lua5.4 scripts/gen-man.lua README.md "$(VERSION)" "$(PREFIX)" > $@.tmp && mv -f $@.tmp $@

install-lua: lua-module
	$(Q)install -d $(DESTDIR)$(CMODDIR) $(DESTDIR)$(LUADIR)/edge/testing
	$(Q)install -m 644 build/lua/edge.so $(DESTDIR)$(CMODDIR)/edge.so
	$(Q)for f in $(LUA_LIBS:lua/%=%); do install -m 644 lua/$$f $(DESTDIR)$(LUADIR)/$$f || exit 1; done

# The man page names PREFIX: made afresh for this one.
install: edge install-lua
	@mkdir -p build/man
	$(Q)lua5.4 scripts/gen-man.lua README.md "$(VERSION)" "$(PREFIX)" > build/man/edge.1
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/examples $(DESTDIR)$(MANDIR)
	$(Q)install -m 755 edge $(DESTDIR)$(BINDIR)/edge
	$(Q)install -m 644 lua/default.lua $(DESTDIR)$(DATADIR)/default.lua
	$(Q)install -m 644 $(EXAMPLES) $(DESTDIR)$(DATADIR)/examples/
	$(Q)install -m 644 build/man/edge.1 $(DESTDIR)$(MANDIR)/edge.1
	$(Q)install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(LOGROTATEDIR)
	$(Q)sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DATADIR@|$(DATADIR)|g' scripts/edge.service \
	    > $(DESTDIR)$(UNITDIR)/edge.service && chmod 644 $(DESTDIR)$(UNITDIR)/edge.service
	$(Q)install -m 644 scripts/edge.logrotate $(DESTDIR)$(LOGROTATEDIR)/edge
	@echo "installed edge $(VERSION) under $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/edge $(DESTDIR)$(CMODDIR)/edge.so $(INSTALLED_LUA) \
	      $(DESTDIR)$(DATADIR)/default.lua $(EXAMPLES:lua/examples/%=$(DESTDIR)$(DATADIR)/examples/%) \
	      $(DESTDIR)$(MANDIR)/edge.1 $(DESTDIR)$(UNITDIR)/edge.service $(DESTDIR)$(LOGROTATEDIR)/edge
	-rmdir $(DESTDIR)$(LUADIR)/edge/testing $(DESTDIR)$(LUADIR)/edge $(DESTDIR)$(DATADIR)/examples \
	       $(DESTDIR)$(DATADIR) 2>/dev/null

# ---- Fuzzing (libFuzzer, clang; spec/fuzz/README.md) ----
#   make fuzz-build                 build/fuzz/fuzz_h1 and build/fuzz/fuzz_h2 (ASan + UBSan + libFuzzer)
#   make fuzz [FUZZ_SECONDS=60]     run each target that long (scripts/fuzz.sh); fails on any finding
# Every src/*.c but main.c and lua_module.c, and llhttp, instrumented; edge.sleep's
# timer is shortened to 0 s through edge_script_sleep_scale (spec/fuzz/fuzz_common.c).
.PHONY: fuzz fuzz-build
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_DIR     := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer -pthread -MMD -MP \
                $(PKG_CFLAGS) -I$(LLHTTP_INC) -Isrc $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_SRCS    := $(filter-out src/main.c src/lua_module.c,$(wildcard src/*.c))
FUZZ_OBJS    := $(FUZZ_SRCS:src/%.c=$(FUZZ_DIR)/obj/%.o) \
                $(addprefix $(FUZZ_DIR)/llhttp/,api.o http.o llhttp.o)
FUZZ_TARGETS := $(FUZZ_DIR)/fuzz_h1 $(FUZZ_DIR)/fuzz_h2

fuzz-build: $(FUZZ_TARGETS)

fuzz: fuzz-build
	$(Q)scripts/fuzz.sh $(FUZZ_SECONDS)

$(FUZZ_TARGETS): $(FUZZ_DIR)/%: $(FUZZ_DIR)/harness/%.o $(FUZZ_DIR)/harness/fuzz_common.o $(FUZZ_OBJS)
	@echo "  LD      $@"
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^ $(LDLIBS)

$(FUZZ_DIR)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (fuzz)"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(filter-out -Werror,$(WARN)) -Wno-gnu-variable-sized-type-not-at-end -c -o $@ $<

$(FUZZ_DIR)/harness/%.o: spec/fuzz/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (fuzz)"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(WARN) -c -o $@ $<

$(FUZZ_DIR)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $< (fuzz)"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -DLLHTTP_STRICT_MODE=1 -w -c -o $@ $<

-include $(wildcard $(FUZZ_DIR)/*/*.d)
