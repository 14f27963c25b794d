/* Shared libFuzzer harness for edge's input paths (spec/fuzz/README.md).
 *
 * One worker (its own ev_loop, the real lua/default.lua, a response cache)
 * is set up once; every input is one cleartext connection over a socketpair,
 * written by the harness as the client, served by the worker's loop, then
 * closed by the client and checked to leave nothing behind. */
#ifndef EDGE_FUZZ_COMMON_H
#define EDGE_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Sets the worker up (once, from LLVMFuzzerInitialize). Exits on failure. */
void edge_fuzz_init(void);

/* Runs one connection: prefix then data are the client's bytes. Aborts when
 * the connection, a request, a watcher or Lua state outlives the input. */
void edge_fuzz_run(const uint8_t *prefix, size_t prefix_len, const uint8_t *data, size_t size);

#endif
