/* Asynchronous name resolution for upstreams: c-ares driven by a worker's
 * libev loop, so no thread ever blocks in getaddrinfo on the request path.
 * /etc/hosts is honoured; answers are cached per their TTL (bounded by
 * valid_max) and the last good answer keeps serving while a re-resolution
 * fails. One resolver per worker: nothing here is shared between threads. */
#ifndef EDGE_RESOLVER_H
#define EDGE_RESOLVER_H

#include <ev.h>
#include <stddef.h>
#include <sys/socket.h>

#define EDGE_RESOLVE_MAX_ADDRS 16

typedef struct edge_resolver edge_resolver;
typedef struct edge_resolve_query edge_resolve_query;

typedef struct edge_resolver_opts {
    double timeout;      /* seconds for one query before it fails (default 5) */
    double valid_max;    /* cache answers at most this long, whatever their TTL (0: use the TTL) */
    double valid_min;    /* ... and at least this long (0: default 1); also the pause, at least
                          * 1 s, between retries of a name served from its last good answer */
    int    family;       /* AF_UNSPEC (default), AF_INET or AF_INET6 */
    const char *servers; /* "ADDR[:PORT],..." instead of resolv.conf's (NULL: resolv.conf) */
} edge_resolver_opts;

/* The answer: status EDGE_OK with n >= 1 addresses (their ports set to the
 * port asked for), or EDGE_ERROR with n == 0 and err a message a person can
 * act on ("cannot resolve api.internal: name not found"). The arrays are
 * valid only during the call. */
typedef void (*edge_resolve_cb)(void *ud, int status, const struct sockaddr_storage *addrs, int n,
                                const char *err);

/* opts may be NULL (defaults). NULL with a message in err when c-ares cannot
 * start (no usable resolv.conf is not an error: /etc/hosts still works). */
edge_resolver *edge_resolver_new(struct ev_loop *loop, const edge_resolver_opts *opts, char *err,
                                 size_t errlen);
/* Fails every pending query's callback with "resolver shut down", then frees.
 * May be called from inside a resolve callback (the c-ares channel is then
 * destroyed once the loop callback on the stack returns). */
void edge_resolver_free(edge_resolver *r);

/* Resolves host (a name, or a numeric IPv4/IPv6 address, brackets allowed)
 * for port. When the answer is at hand (numeric, cached and fresh, the last
 * good answer of a failing name, /etc/hosts, a malformed name, or from a
 * callback once the resolver is being freed), cb runs before this returns and
 * the result is NULL; otherwise cb runs later from the loop, exactly once, and
 * the returned query may be cancelled until then. A callback may resolve,
 * cancel other queries or free the resolver. */
edge_resolve_query *edge_resolver_resolve(edge_resolver *r, const char *host, int port,
                                          edge_resolve_cb cb, void *ud);
/* The same, with the caller's own freshness: a cached answer is used for
 * `valid` seconds after it came, whatever its TTL (an upstream's dns.valid);
 * valid <= 0 is edge_resolver_resolve. While a name fails, its last good
 * answer is served and it is asked again every `valid` seconds (at least 1). */
edge_resolve_query *edge_resolver_resolve_valid(edge_resolver *r, const char *host, int port, double valid,
                                                edge_resolve_cb cb, void *ud);
/* Withdraws a pending query: its callback never runs. Not after it ran:
 * the query is freed just before its callback. */
void edge_resolver_cancel(edge_resolve_query *q);

#endif
