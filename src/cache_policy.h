/* Whether, and for how long, a response may be stored, and under which
 * variant (RFC 9111, as far as a shared cache in front of a script needs). */
#ifndef EDGE_CACHE_POLICY_H
#define EDGE_CACHE_POLICY_H

#include "buf.h"
#include "request.h"

struct edge_cache_life;

/* Whether resp (the answer to req) may be stored (1) or not (0), and for
 * which lifetimes (cache.h's ttl / grace / keep):
 *  - never for HEAD (a bodiless entry must not answer a later GET), for the
 *    response field cache = false, or for Cache-Control no-store, private or
 *    no-cache;
 *  - unless the script set cache = "force": never with Set-Cookie, never with
 *    Vary: *, never for a request with Authorization unless the response says
 *    public, s-maxage or must-revalidate (RFC 9111 3.5), and only for the
 *    heuristically cacheable statuses (200, 203, 204, 206, 300, 301, 308,
 *    404, 405, 410, 414, 501) unless cache = "any-status";
 *  - ttl: the script's ttl, else s-maxage, else max-age, else Expires, else
 *    dflt->ttl; grace: the script's grace, else stale-while-revalidate, else
 *    dflt->grace; keep: the script's keep, else stale-if-error, else
 *    dflt->keep (RFC 5861). must-revalidate and proxy-revalidate make grace
 *    and keep 0 unless the script set them. */
int edge_cache_policy_life(const edge_request *req, const edge_response *resp,
                           const struct edge_cache_life *dflt, struct edge_cache_life *life);

/* Reads resp's Vary field names into names, lower-case, comma-separated,
 * without spaces. Returns 0 when resp has no Vary (or the script forced the
 * store: its key then says what selects the response), 1 when names holds
 * the list, -1 for Vary: *. */
int edge_cache_policy_vary(const edge_response *resp, edge_buf *names);

/* Appends to out the key of req's variant under key: the key, then each
 * field named in names (as edge_cache_policy_vary wrote them) with req's
 * value for it, list elements trimmed of white space and joined with ",",
 * an absent field told apart from an empty one. */
void edge_cache_policy_variant_key(const edge_request *req, const char *key, size_t klen,
                                   const char *names, size_t nlen, edge_buf *out);

#endif
