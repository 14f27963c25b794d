/* Revalidation: an expired entry with validators (ETag, Last-Modified) is
 * refreshed with a conditional request (edge.proxy sends If-None-Match /
 * If-Modified-Since from it); an origin's 304 then updates the entry's
 * fields and lifetime while its body is reused, not downloaded again
 * (RFC 9111 4.3.3, 4.3.4). */
#ifndef EDGE_REVALIDATE_H
#define EDGE_REVALIDATE_H

#include <stddef.h>

#include "request.h"

struct edge_cache_entry;

/* The value of an entry's field (lower-case name) and its length, or NULL. */
const char *edge_cache_entry_field(const struct edge_cache_entry *e, const char *name, size_t n,
                                   size_t *vlen);

/* Makes resp, an origin's 304 to a conditional refresh of e, the response e
 * holds with the 304's fields replacing e's fields of the same names (all
 * but Content-Length and the fields edge sets: X-Cache, Age, Cache-Status).
 * A body pipe resp holds is closed; the script's cache fields (ttl, grace,
 * keep, cache) stay. */
void edge_revalidate_merge(edge_response *resp, const struct edge_cache_entry *e);

#endif
