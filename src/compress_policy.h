/* The rules of response compression (compress.h): which coding the client
 * accepts, which responses may be compressed, and the header fields that
 * say so. No compressing here: compress_codec.h does that. */
#ifndef EDGE_COMPRESS_POLICY_H
#define EDGE_COMPRESS_POLICY_H

#include <stdint.h>

#include "config.h"
#include "request.h"

enum edge_coding { EDGE_CODING_IDENTITY = 0, EDGE_CODING_GZIP, EDGE_CODING_BR };

/* "gzip" or "br" (the Content-Encoding token); "identity". */
const char *edge_coding_name(int coding);

/* The coding the client prefers among br and gzip (x-gzip is gzip) by its
 * Accept-Encoding fields (RFC 9110 12.5.3): the higher q, br at equal q;
 * "*" stands for a coding not named; q=0 excludes. IDENTITY when neither
 * is acceptable, or without the field (what every client decodes). */
int edge_compress_negotiate(const edge_request *req);

/* A response's header fields, from an edge_response or a cache entry:
 * spans into data. */
typedef struct edge_fields {
    const edge_header *h;
    int         n;
    const char *data;
} edge_fields;

static inline edge_fields edge_response_fields(const edge_response *resp)
{
    return (edge_fields){resp->headers, resp->n_headers, resp->data.base};
}

/* What the rules make of a response, before the client's preference. */
enum {
    EDGE_COMPRESS_NEVER,    /* sent as it is (not compressible, --compress off, res.compress = false) */
    EDGE_COMPRESS_ALLOWED   /* a compressible type of a compressible size: Vary: Accept-Encoding */
};

/* Applies the rules: --compress on, a status with a body (not 206), at
 * least --compress-min-size bytes (body_len < 0: unknown, streamed),
 * a compressible Content-Type (text/ anything, application/json, application/javascript,
 * application/xml, image/svg+xml, any +json or +xml), no Content-Encoding,
 * no Content-Range, no Cache-Control no-transform; off (res.compress = false) says never. */
int edge_compress_check(const edge_config *cfg, int status, const edge_fields *f, int64_t body_len, int off);

/* Appends from's fields to to's as the response in coding carries them:
 * Accept-Encoding in Vary (merged into the first Vary field, unless one
 * names it already or is "*"), and for a coding other than identity,
 * Content-Encoding, a strong ETag made weak (the bytes differ from the
 * identity's) and no Accept-Ranges (ranges of the identity would not
 * apply). */
void edge_compress_rewrite_head(edge_response *to, const edge_fields *from, int coding);

#endif
