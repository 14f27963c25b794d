/* A request to a named upstream (edge.upstream.define): each try asks the
 * balancer for a server, resolves it through the worker's resolver, fetches
 * with the upstream's settings (upstream_fetch.h) and tells the balancer how
 * it ended; failures listed in retries.on are tried again on another server
 * while the tries cap allows.
 *
 * The callback contract is upstream_fetch.h's: cb runs exactly once, from the
 * loop, never after edge_named_cancel(), and the handle is gone when it runs. */
#ifndef EDGE_UPSTREAM_NAMED_H
#define EDGE_UPSTREAM_NAMED_H

#include "lua_upstream.h"
#include "upstream_fetch.h"

typedef struct edge_named_fetch edge_named_fetch;

/* What to send and how; strings are copied. */
typedef struct edge_named_request {
    const char *wire;            /* the whole request: line, headers (Host included), body */
    size_t      wire_len;
    const char *label;           /* names the request in messages ("http://api/x") */
    const char *key;             /* hash_key(req)'s answer, or NULL (round robin) */
    size_t      key_len;
    unsigned    is_head : 1, idempotent : 1, stream : 1, upgrade : 1;   /* upgrade: upstream_fetch.h's */
    struct edge_pipe *body;      /* streaming: a request body arriving, borrowed (upstream_fetch.h);
                                  * no try follows one that took a byte of it */
    unsigned    body_chunked : 1;
    unsigned    tries;           /* 1..EDGE_UPSTREAM_MAX_TRIES: the cap, retries included */
    size_t      max_body;
    edge_fetch_timeouts timeout;
} edge_named_request;

/* Starts; never NULL. u must outlive the fetch (it lives with the VM that
 * the waiting request holds). The result's err, on failure, reads
 * "upstream api (2 tried): connect refused: 127.0.0.1:1", or "no live server
 * in upstream api (2 tried): ..." when every server was down. */
edge_named_fetch *edge_named_fetch_start(struct edge_worker *w, edge_upstream *u, const edge_named_request *r,
                                         edge_fetch_cb cb, void *ud);
/* Abandons it: the try in flight is closed and ends ABORTED (not a failure). */
void edge_named_cancel(edge_named_fetch *nf);

#endif
