/* libFuzzer target: arbitrary bytes as an HTTP/1.1 client's side of a
 * cleartext connection. They go through edge's real input path: protocol
 * detection (conn.c), llhttp in strict mode (h1.c), the dispatcher, the cache
 * and lua/default.lua; the responses are read back and discarded. An input
 * that happens to start with the HTTP/2 preface takes the HTTP/2 path, as it
 * would on a --listen-plain listener. See spec/fuzz/fuzz_common.c. */
#include "fuzz_common.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    edge_fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    edge_fuzz_run(NULL, 0, data, size);
    return 0;
}
