/* gzip (zlib) and brotli encoders: a whole body in one call, or a body
 * that arrives in pieces (a streamed response). Memory comes from edge's
 * allocation wrappers (out of memory aborts), so an error here is a
 * library error, not a lack of memory.
 *
 * Settings: gzip level 6 (zlib's default); brotli quality 5, window 2^22
 * for whole bodies (made once and stored: the better ratio pays on every
 * hit) and 2^18 for streams (the window is allocated per stream, about
 * 1.9 MB with its hash tables against 9.6 MB at 2^22; the ratio differs by
 * about 3 % on 1 MB of text). */
#ifndef EDGE_COMPRESS_CODEC_H
#define EDGE_COMPRESS_CODEC_H

#include <stddef.h>

#include "buf.h"

/* The most bytes edge_compress_whole may write for n input bytes in coding
 * (an edge_coding other than identity); 0 when n is too large for it. */
size_t edge_compress_bound(int coding, size_t n);

/* Appends the n bytes at in, compressed in coding, to out. EDGE_OK, or
 * EDGE_ERROR (out then holds what it held before). */
int edge_compress_whole(int coding, const char *in, size_t n, edge_buf *out);

typedef struct edge_encoder edge_encoder;

/* What edge_encoder_run does with its input. */
enum {
    EDGE_ENCODE_MORE,    /* compress it; output comes when the encoder has enough */
    EDGE_ENCODE_FLUSH,   /* compress it and write out everything given so far */
    EDGE_ENCODE_END      /* compress it and end the stream */
};

/* A stream encoder for coding. */
edge_encoder *edge_encoder_new(int coding);
/* Compresses n bytes (n may be 0) as op says, appending output to out.
 * EDGE_OK, or EDGE_ERROR (the stream is broken: free the encoder). */
int edge_encoder_run(edge_encoder *enc, const char *in, size_t n, int op, edge_buf *out);
void edge_encoder_free(edge_encoder *enc);

#endif
