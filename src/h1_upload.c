/* HTTP/1.1 request bodies past --body-buffer (h1_internal.h). */
#include "h1_internal.h"
#include "common.h"
#include "conn.h"
#include "dispatch.h"
#include "log.h"
#include "request.h"
#include "worker.h"

#include <llhttp.h>

/* ---- request bodies past --body-buffer ----
 *
 * The request is dispatched once its body passes --body-buffer, with
 * req.body_pipe holding the bytes so far; the parser goes on feeding the pipe
 * while the core works. When the pipe is full the parser and the socket read
 * pause (the client's TCP window closes) until its consumer, the upstream
 * connection sending it to the origin, takes it down again. A pipe closed
 * before its end (the script answered itself, the origin failed) turns the
 * rest into BODY_DISCARD: read and dropped, within --max-body and
 * --body-timeout, so the connection can serve its next request. */

int edge_h1_uploading(const edge_h1 *h)
{
    return h->body_mode != BODY_WHOLE;
}

/* The consumer took bytes: parse on, from the loop (never inside it). */
static void upload_resume(void *ud)
{
    edge_h1 *h = ud;
    edge_conn *c = h->c;
    if (!h->upload_paused) return;
    h->upload_paused = 0;
    h->upload_resumed = 1;
    if (c->state != EDGE_CONN_OPEN) return;
    edge_conn_set_timeout(c, c->w->cfg->body_timeout);
    edge_conn_resume_read(c);
    ev_feed_event(c->w->loop, &c->wio, EV_WRITE);   /* h1_on_drained parses what c->in holds */
}

/* The consumer closed the pipe before its end: the rest is dropped. */
static void upload_cancel(void *ud)
{
    edge_h1 *h = ud;
    h->upload = NULL;
    h->body_mode = BODY_DISCARD;
    upload_resume(h);
}

/* Inside llhttp: makes the pipe (length: Content-Length, or -1), moves the
 * bytes so far into it and has parse_some dispatch the request. */
void edge_h1_start_upload(edge_h1 *h, int64_t length)
{
    edge_request *req = &h->req;
    edge_pipe_producer producer = {.resume = upload_resume, .cancel = upload_cancel, .ud = h};
    h->upload = req->body_pipe = edge_pipe_new(length, 0, &producer);
    req->body_streamed = 1;
    req->has_body = 1;
    h->body_mode = BODY_PIPE;
    h->upload_paused = 0;
    h->keep_alive = llhttp_should_keep_alive(&h->parser);
    h->state = H1_DISPATCHED;
    h->dispatch_now = 1;
    if (req->body.len) edge_h1_upload_write(h, req->body.base, req->body.len);
    req->body.len = 0;
}

/* Hands body bytes to the pipe; returns 1 when it is full (the parser
 * pauses: on_body returns HPE_PAUSED). */
int edge_h1_upload_write(edge_h1 *h, const char *at, size_t n)
{
    if (h->body_mode != BODY_PIPE) return 0;
    int rc = edge_pipe_write(h->upload, at, n);
    if (rc == EDGE_PIPE_GONE) {             /* closed inside the write: freed */
        h->upload = NULL;
        h->body_mode = BODY_DISCARD;
        return 0;
    }
    if (rc != EDGE_PIPE_PAUSE) return 0;
    h->upload_paused = 1;
    edge_conn_pause_read(h->c);
    edge_conn_set_timeout(h->c, 0);         /* waiting on the origin, not the client */
    return 1;
}

/* Inside llhttp: the streamed body is complete. */
void edge_h1_upload_end(edge_h1 *h)
{
    if (h->upload) edge_pipe_end(h->upload, 1);
    h->upload = NULL;
    h->body_mode = BODY_WHOLE;
    h->upload_paused = 0;
    edge_conn_set_timeout(h->c, 0);         /* DRAINING: parse_some goes on to the next request */
}

/* The client failed its streamed body (too large, bad framing, too slow):
 * the pipe fails (the origin request is aborted); the client gets status if
 * no response began, else the connection is closed. */
void edge_h1_upload_failed(edge_h1 *h, int status)
{
    edge_log(EDGE_LOG_INFO, h->c->id, "request %s: the streamed request body failed: %d",
             edge_request_id(&h->req), status);
    if (h->upload) edge_pipe_end(h->upload, 0);
    h->upload = NULL;
    h->body_mode = BODY_WHOLE;
    h->upload_paused = 0;
    if (h->state == H1_DISPATCHED) {
        edge_dispatch_cancel(&h->req);
        edge_h1_reject(h, status);
        return;
    }
    if (h->state != H1_CLOSING) edge_conn_close(h->c);
}

