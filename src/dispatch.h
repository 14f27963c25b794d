/* The dispatcher: a complete request in, a response out, whatever the protocol.
 *
 *   start -> in-flight limit (503) -> cache_key hook
 *         -> cache hit: the stored response (X-Cache: HIT, Age)
 *         -> miss: wait for an identical miss in progress (coalescing), or
 *            respond hook -> store when cacheable (X-Cache: MISS)
 *         -> ops->respond */
#ifndef EDGE_DISPATCH_H
#define EDGE_DISPATCH_H

#include <stddef.h>

struct edge_request;
struct edge_cache_entry;

/* Runs the request. The response arrives through req->ops->respond,
 * possibly before this returns. */
void edge_dispatch_start(struct edge_request *req);
/* Completes a request whose respond hook finished with status rc (EDGE_OK,
 * or EDGE_ERROR for a 500). Its last action is req->ops->respond(req). */
void edge_dispatch_finish(struct edge_request *req, int rc);
/* The protocol gave up on the request (client gone): stops whatever it waits
 * for. ops->respond will not be called. */
void edge_dispatch_cancel(struct edge_request *req);
/* The client left before its response: edge_dispatch_cancel, then the
 * response is 499 (nginx's status for it) and the script's log phase runs. */
void edge_dispatch_client_gone(struct edge_request *req);

/* Runs a background refresh (refresh.h) of stale, the entry in grace at
 * the request's key, leading the flight for key (the caller took it with
 * edge_cache_flight_try_lead): the respond hook runs and its answer is
 * stored; a failure keeps the stale entry. Takes a reference to stale. */
void edge_dispatch_refresh(struct edge_request *req, struct edge_cache_entry *stale, const char *key,
                           size_t klen);

/* Requests in flight across all workers now. */
int edge_dispatch_inflight(void);

#endif
