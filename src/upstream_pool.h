/* A worker's idle connections to origins, and its client TLS contexts.
 *
 * Pools are keyed by everything that makes a connection distinct: address,
 * port, TLS on/off, SNI, verify mode and CA file. Idle connections are
 * reused last-in first-out (the warmest first), at most keepalive.size per
 * key, each closed after idle_timeout or max_requests. Per worker: no locks. */
#ifndef EDGE_UPSTREAM_POOL_H
#define EDGE_UPSTREAM_POOL_H

#include <ev.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "request.h"

struct edge_upconn;

#define EDGE_POOLS_SPARE_RESPONSES 32   /* response buffers kept for the next fetches */

typedef struct edge_keepalive {
    int    size;            /* idle connections kept per key (0: none) */
    double idle_timeout;    /* seconds an idle connection is kept */
    int    max_requests;    /* requests per connection, then it is closed */
} edge_keepalive;

typedef struct edge_pool {
    char  *key;
    edge_keepalive ka;               /* the settings of the latest fetch for this key */
    struct edge_upconn *idle;        /* a LIFO stack through upconn->next */
    int    n_idle;
    int    busy;                     /* fetches holding this pool: it is not evicted */
    _Atomic uint64_t *idle_gauge;    /* follows n_idle in /metrics (its upstream's), or NULL */
    SSL_SESSION *session;            /* the last resumable session to this origin */
    struct edge_pool *prev, *next;   /* most recently used first */
} edge_pool;

typedef struct edge_client_ctx {
    char    *ca_file;                /* NULL: the system store */
    SSL_CTX *ctx;
    struct edge_client_ctx *next;
} edge_client_ctx;

typedef struct edge_pools {
    edge_pool *list;
    int        n;
    edge_client_ctx *ctxs;
    edge_response spare[EDGE_POOLS_SPARE_RESPONSES];   /* empty, their buffers allocated */
    int        n_spare;
} edge_pools;

void edge_pools_init(edge_pools *ps);
/* Closes every idle connection and frees every pool and context. No fetch
 * may be in flight. */
void edge_pools_free(edge_pools *ps);

/* The pool for key, made on first use; ka (NULL: leave them) becomes its
 * settings from now on; *created says whether it is new. Never NULL. */
edge_pool *edge_pools_get(edge_pools *ps, const char *key, const edge_keepalive *ka, int *created);
/* The most recently parked idle connection, off the pool; NULL when none. */
struct edge_upconn *edge_pool_take(edge_pool *p);
/* Keeps c idle when it is reusable, under max_requests and the pool has
 * room; frees it otherwise. Either way the caller no longer owns c. */
void edge_pool_put(edge_pool *p, struct edge_upconn *c);
/* Remembers c's TLS session for the next connection to this origin. */
void edge_pool_keep_session(edge_pool *p, struct edge_upconn *c);

/* Response buffers are recycled, saving three allocations and frees per
 * fetch. give takes r's buffers (keeping a few small ones, freeing the rest)
 * and leaves r empty; lend gives an empty r (no buffers) spare ones if any. */
void edge_pools_give_response(edge_pools *ps, edge_response *r);
void edge_pools_lend_response(edge_pools *ps, edge_response *r);

/* The worker's client context for ca_file (NULL: the system store), made on
 * first use; NULL with a message when ca_file cannot be loaded. */
SSL_CTX *edge_pools_client_ctx(edge_pools *ps, const char *ca_file, char *err, size_t errlen);

#endif
