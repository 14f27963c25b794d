/* The dispatcher: a complete request in, a response out, whatever the protocol.
 *   start -> cache_key hook -> (cache, later) -> respond hook -> ops->respond */
#ifndef EDGE_DISPATCH_H
#define EDGE_DISPATCH_H

struct edge_request;

/* Runs the request's hooks. The response arrives through req->ops->respond,
 * possibly before this returns. */
void edge_dispatch_start(struct edge_request *req);
/* Completes a request whose hooks finished with status rc (EDGE_OK, or
 * EDGE_ERROR for a 500). Its last action is req->ops->respond(req). */
void edge_dispatch_finish(struct edge_request *req, int rc);
/* The protocol gave up on the request (client gone): stops whatever it waits
 * for. ops->respond will not be called. */
void edge_dispatch_cancel(struct edge_request *req);

#endif
