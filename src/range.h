/* Byte ranges answered from a whole body (RFC 9110 14): the cache does not
 * forward a client's Range to the origin (proxy_request.h), so it answers
 * it itself, as nginx's range filter does for proxy_cache. */
#ifndef EDGE_RANGE_H
#define EDGE_RANGE_H

#include "request.h"

/* Applies req's Range (GET only) to resp, a 200 with its whole body: one
 * satisfiable range makes it a 206 with that slice and Content-Range; an
 * unsatisfiable one a 416 with Content-Range: bytes * / length. Several
 * ranges, a field edge cannot read, or an If-Range that does not match the
 * response's ETag (strongly) or Last-Modified leave the whole 200 (RFC 9110
 * 14.2 lets a server ignore Range). */
void edge_range_apply(const edge_request *req, edge_response *resp);

#endif
