/* libFuzzer target: the HTTP/2 client connection preface followed by
 * arbitrary bytes (frames, after the preface: SETTINGS first), on a cleartext
 * connection with prior knowledge. They go through edge's real HTTP/2 path:
 * protocol detection (conn.c), nghttp2 and h2.c's callbacks, the dispatcher,
 * the cache and lua/default.lua, one coroutine per stream. The seeds in
 * spec/fuzz/corpus/h2/ therefore start after the preface. See spec/fuzz/fuzz_common.c. */
#include "fuzz_common.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    edge_fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    edge_fuzz_run((const uint8_t *)preface, sizeof(preface) - 1, data, size);
    return 0;
}
