/* Response compression: gzip or brotli, chosen by the client's
 * Accept-Encoding, for compressible types (compress_policy.h has the rules).
 *
 * Three ways a body gets compressed:
 *   - a whole body (a script's string, a cache miss): at once, in one call;
 *   - a cache hit: the entry's compressed copy, stored in the cache under
 *     the entry's key .. "\0ce=br" (or "\0ce=gzip") the first time a client
 *     wants it and served as stored from then on;
 *   - a streamed body (edge.proxy): as it streams, through a pipe transform
 *     (compress_stream.h); the cache still sees the identity bytes.
 * The identity response is what the cache stores; it never holds
 * Vary: Accept-Encoding, which is added on the way out. */
#ifndef EDGE_COMPRESS_H
#define EDGE_COMPRESS_H

#include "request.h"

struct edge_cache_entry;

/* Compresses req->resp for the client when the rules allow, and sets its
 * Content-Encoding, Vary and ETag. Call once the response is final, just
 * before it is sent; a response edge_compress_from_entry made is left as it
 * is. Takes the no-compress field off every response. */
void edge_compress_response(edge_request *req);

/* Fills req->resp from the cache entry e (fresh or stale, referenced by the
 * caller) as edge_cache_entry_to_response does, but in the encoding the
 * client prefers: from the entry's stored compressed copy, or compressed
 * now and stored (with e's remaining lifetimes) when e is still fresh. */
void edge_compress_from_entry(edge_request *req, const struct edge_cache_entry *e, double now);

#endif
