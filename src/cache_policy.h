/* Whether, and for how long, a response may be stored (RFC 9111, as far as a
 * shared cache in front of a script needs). */
#ifndef EDGE_CACHE_POLICY_H
#define EDGE_CACHE_POLICY_H

#include "request.h"

/* Seconds resp may be kept, or 0 when it must not be stored:
 *  - Cache-Control no-store, private or no-cache, or a Set-Cookie header: never
 *    (unless the script set ttl, which also overrides Set-Cookie);
 *  - else the script's ttl, else s-maxage, else max-age, else default_ttl;
 *  - without a script ttl, only statuses cacheable by default (200, 203, 204,
 *    300, 301, 404, 405, 410, 414, 501) are stored. */
double edge_cache_policy_ttl(const edge_response *resp, double default_ttl);

#endif
