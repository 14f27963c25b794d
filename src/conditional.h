/* Conditional requests a cache answers itself (RFC 9110 13): a client's
 * If-None-Match / If-Modified-Since checked against the response edge is
 * about to send from an entry; when the client's copy is current, the
 * answer is 304 without a body. */
#ifndef EDGE_CONDITIONAL_H
#define EDGE_CONDITIONAL_H

#include "request.h"

/* Whether req (GET or HEAD) holds a copy of resp (a 200) that is still
 * current: If-None-Match matches resp's ETag (weak comparison, or "*"),
 * else, when there is no If-None-Match, Last-Modified is not later than
 * If-Modified-Since. */
int edge_conditional_not_modified(const edge_request *req, const edge_response *resp);

/* Turns resp into its 304: no body, no content metadata (Content-Type,
 * -Length, -Encoding, ...); ETag, Last-Modified, Cache-Control, Expires,
 * Vary and the rest stay (RFC 9110 15.4.5). */
void edge_conditional_to_304(edge_response *resp);

/* Seconds since the epoch of an HTTP-date (IMF-fixdate, RFC 850 or asctime);
 * -1 when it is none of them. */
double edge_http_date_parse(const char *v, size_t n);

#endif
