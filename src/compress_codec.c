/* gzip and brotli encoders (compress_codec.h). */
#include "compress_codec.h"
#include "common.h"
#include "compress_policy.h"

#include <brotli/encode.h>
#include <limits.h>
#include <stdlib.h>
#include <zlib.h>

#define GZIP_LEVEL       6
#define GZIP_WINDOW      (15 + 16)   /* 2^15, with the gzip header and trailer */
#define GZIP_MEM_LEVEL   8
#define BR_QUALITY       5
#define BR_WINDOW_WHOLE  22
#define BR_WINDOW_STREAM 18
#define OUT_STEP         (16 * 1024) /* output room added per encoder call */

/* ---- allocation: edge's wrappers ---- */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    return edge_malloc((size_t)items * size);
}

static void z_free(voidpf opaque, voidpf p)
{
    free(p);
}

static void *br_alloc(void *opaque, size_t n)
{
    return edge_malloc(n);
}

static void br_free(void *opaque, void *p)
{
    free(p);
}

static int gzip_init(z_stream *z)
{
    *z = (z_stream){.zalloc = z_alloc, .zfree = z_free};
    return deflateInit2(z, GZIP_LEVEL, Z_DEFLATED, GZIP_WINDOW, GZIP_MEM_LEVEL, Z_DEFAULT_STRATEGY) == Z_OK
               ? EDGE_OK : EDGE_ERROR;
}

static BrotliEncoderState *br_new(int window, size_t size_hint)
{
    BrotliEncoderState *s = BrotliEncoderCreateInstance(br_alloc, br_free, NULL);
    if (s == NULL) return NULL;
    BrotliEncoderSetParameter(s, BROTLI_PARAM_QUALITY, BR_QUALITY);
    BrotliEncoderSetParameter(s, BROTLI_PARAM_LGWIN, (uint32_t)window);
    BrotliEncoderSetParameter(s, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT);
    if (size_hint) BrotliEncoderSetParameter(s, BROTLI_PARAM_SIZE_HINT, (uint32_t)size_hint);
    return s;
}

/* ---- whole bodies ---- */

size_t edge_compress_bound(int coding, size_t n)
{
    if (n > UINT_MAX / 2) return 0;      /* zlib counts in uInt; no body is that large here */
    if (coding == EDGE_CODING_BR) return BrotliEncoderMaxCompressedSize(n);
    /* deflateBound without a stream: zlib's documented worst case for the
     * default settings, plus the gzip wrapper (18 bytes). */
    return compressBound((uLong)n) + 18;
}

static int gzip_whole(const char *in, size_t n, edge_buf *out, size_t bound)
{
    z_stream z;
    if (gzip_init(&z) != EDGE_OK) return EDGE_ERROR;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out->base + out->len;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    size_t made = bound - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) return EDGE_ERROR;
    out->len += made;
    return EDGE_OK;
}

static int br_whole(const char *in, size_t n, edge_buf *out, size_t bound)
{
    BrotliEncoderState *s = br_new(BR_WINDOW_WHOLE, n);
    if (s == NULL) return EDGE_ERROR;
    size_t avail_in = n, avail_out = bound;
    const uint8_t *next_in = (const uint8_t *)in;
    uint8_t *next_out = (uint8_t *)out->base + out->len;
    int ok = BrotliEncoderCompressStream(s, BROTLI_OPERATION_FINISH, &avail_in, &next_in, &avail_out,
                                         &next_out, NULL) && BrotliEncoderIsFinished(s);
    BrotliEncoderDestroyInstance(s);
    if (!ok) return EDGE_ERROR;
    out->len += bound - avail_out;
    return EDGE_OK;
}

int edge_compress_whole(int coding, const char *in, size_t n, edge_buf *out)
{
    size_t bound = edge_compress_bound(coding, n);
    if (bound == 0) return EDGE_ERROR;
    edge_buf_reserve(out, bound);
    return coding == EDGE_CODING_BR ? br_whole(in, n, out, bound) : gzip_whole(in, n, out, bound);
}

/* ---- streams ---- */

struct edge_encoder {
    int coding;
    z_stream z;                     /* gzip */
    BrotliEncoderState *br;         /* brotli */
};

edge_encoder *edge_encoder_new(int coding)
{
    edge_encoder *enc = edge_calloc(1, sizeof(*enc));
    enc->coding = coding;
    int ok = coding == EDGE_CODING_BR ? (enc->br = br_new(BR_WINDOW_STREAM, 0)) != NULL
                                      : gzip_init(&enc->z) == EDGE_OK;
    if (ok) return enc;
    free(enc);
    return NULL;
}

/* zlib: deflate until it took all the input and, for a flush or the end,
 * wrote everything out (it says so by leaving output room unused). */
static int gzip_run(z_stream *z, const char *in, size_t n, int op, edge_buf *out)
{
    int flush = op == EDGE_ENCODE_END ? Z_FINISH : op == EDGE_ENCODE_FLUSH ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)n;
    for (;;) {
        edge_buf_reserve(out, OUT_STEP);
        size_t room = out->cap - out->len;
        if (room > UINT_MAX) room = UINT_MAX;
        z->next_out = (Bytef *)out->base + out->len;
        z->avail_out = (uInt)room;
        int rc = deflate(z, flush);
        out->len += room - z->avail_out;
        if (rc == Z_STREAM_END) return EDGE_OK;
        if (rc != Z_OK && rc != Z_BUF_ERROR) return EDGE_ERROR;
        if (z->avail_out == 0) continue;                 /* more output waits */
        return flush == Z_FINISH ? EDGE_ERROR : EDGE_OK;  /* room left: done (FINISH: ended early?) */
    }
}

/* brotli: its own output buffer, taken as it fills (no copy inside). */
static int br_run(BrotliEncoderState *s, const char *in, size_t n, int op, edge_buf *out)
{
    BrotliEncoderOperation bop = op == EDGE_ENCODE_END     ? BROTLI_OPERATION_FINISH
                                 : op == EDGE_ENCODE_FLUSH ? BROTLI_OPERATION_FLUSH
                                                           : BROTLI_OPERATION_PROCESS;
    size_t avail_in = n;
    const uint8_t *next_in = (const uint8_t *)in;
    for (;;) {
        size_t avail_out = 0;
        if (!BrotliEncoderCompressStream(s, bop, &avail_in, &next_in, &avail_out, NULL, NULL))
            return EDGE_ERROR;
        size_t got = 0;
        const uint8_t *p = BrotliEncoderTakeOutput(s, &got);
        if (got) edge_buf_append(out, p, got);
        if (avail_in > 0 || BrotliEncoderHasMoreOutput(s)) continue;
        if (op == EDGE_ENCODE_END && !BrotliEncoderIsFinished(s)) continue;
        return EDGE_OK;
    }
}

int edge_encoder_run(edge_encoder *enc, const char *in, size_t n, int op, edge_buf *out)
{
    if (n > UINT_MAX) return EDGE_ERROR;     /* callers pass slices */
    if (enc->coding == EDGE_CODING_BR) return br_run(enc->br, in, n, op, out);
    return gzip_run(&enc->z, in, n, op, out);
}

void edge_encoder_free(edge_encoder *enc)
{
    if (enc == NULL) return;
    if (enc->coding == EDGE_CODING_BR) BrotliEncoderDestroyInstance(enc->br);
    else deflateEnd(&enc->z);
    free(enc);
}
