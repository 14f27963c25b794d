/* HTTP/2 request bodies past --body-buffer, streamed to edge.proxy with the
 * stream's flow-control window as back-pressure (h2_internal.h). */
#include "h2_internal.h"
#include "common.h"
#include "dispatch.h"
#include "log.h"
#include "worker.h"

/* ---- request bodies past --body-buffer ---- */

/* The stream ends (closed, reset, the connection gone) mid-body: the pipe
 * fails, so the origin request does too. */
void edge_h2_upload_abandon(edge_h2 *h, edge_h2_stream *st)
{
    if (st->upload) edge_pipe_end(st->upload, 0);
    st->upload = NULL;
    st->body_mode = BODY_WHOLE;
    st->upload_paused = 0;
    ev_timer_stop(h->c->w->loop, &st->body_deadline);
}

static void body_deadline_restart(edge_h2 *h, edge_h2_stream *st)
{
    st->body_deadline.repeat = h->c->w->cfg->body_timeout;
    ev_timer_again(h->c->w->loop, &st->body_deadline);
}

/* The consumer took bytes (or left): the held window goes back, from the
 * loop's next turn (this runs inside the consumer). */
static void upload_resume(void *ud)
{
    edge_h2_stream *st = ud;
    edge_h2 *h = st->h2;
    if (!st->upload_paused) return;
    st->upload_paused = 0;
    if (h->c->state != EDGE_CONN_OPEN) return;
    if (st->window_held) nghttp2_session_consume_stream(h->session, st->id, st->window_held);
    st->window_held = 0;
    body_deadline_restart(h, st);
    ev_feed_event(h->c->w->loop, &h->c->wio, EV_WRITE);   /* edge_h2_on_drained sends the WINDOW_UPDATE */
}

/* The consumer closed the pipe before its end: the rest is dropped (and an
 * early response ends the stream with RST_STREAM NO_ERROR, as before). */
static void upload_cancel(void *ud)
{
    edge_h2_stream *st = ud;
    st->upload = NULL;
    st->body_mode = BODY_DISCARD;
    upload_resume(st);
}

/* The client's Content-Length, or -1. */
static int64_t content_length(const edge_request *req)
{
    const edge_header *cl = edge_request_header(req, "content-length", 14);
    if (cl == NULL || cl->value.len == 0 || cl->value.len > 18) return -1;
    const char *v = edge_request_ptr(req, cl->value);
    int64_t n = 0;
    for (uint32_t i = 0; i < cl->value.len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

/* The body passed --body-buffer: it streams through a pipe from now on. */
void edge_h2_start_upload(edge_h2 *h, edge_h2_stream *st)
{
    edge_request *req = &st->req;
    edge_pipe_producer producer = {.resume = upload_resume, .cancel = upload_cancel, .ud = st};
    st->upload = req->body_pipe = edge_pipe_new(content_length(req), 0, &producer);
    req->body_streamed = 1;
    req->has_body = 1;
    st->body_mode = BODY_PIPE;
    st->body_total = req->body.len;
    if (req->body.len && edge_pipe_write(st->upload, req->body.base, req->body.len) == EDGE_PIPE_PAUSE)
        st->upload_paused = 1;          /* those bytes' window went back already */
    req->body.len = 0;
    body_deadline_restart(h, st);
}

/* The client failed its streamed body (past --max-body, too slow): the pipe
 * fails (the origin request is aborted); the client gets status if no
 * response began, else RST_STREAM. */
static void upload_failed(edge_h2 *h, edge_h2_stream *st, int status)
{
    edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: the streamed request body failed: %d", st->id, status);
    edge_h2_upload_abandon(h, st);
    st->reject_status = status;     /* its later DATA frames only give the connection window back */
    if (st->phase == ST_DISPATCHED) {
        edge_dispatch_cancel(&st->req);
        edge_h2_reject_stream(h, st, status);
    } else if (st->phase == ST_SENDING) {
        edge_h2_reset_stream(h, st, NGHTTP2_INTERNAL_ERROR);
    }
}

void edge_h2_on_body_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_h2_stream *st = edge_container_of(t, edge_h2_stream, body_deadline);
    edge_h2 *h = st->h2;
    ev_timer_stop(loop, t);
    if (h->c->state != EDGE_CONN_OPEN || st->upload_paused || st->body_mode == BODY_WHOLE) return;
    edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: no request body for %.0fs", st->id, t->repeat);
    upload_failed(h, st, 408);
    edge_h2_send_pending(h);
}

/* DATA of a streamed body: into the pipe (its window held while the pipe is
 * full), or dropped. The connection window always comes back. */
void edge_h2_upload_data(edge_h2 *h, edge_h2_stream *st, const uint8_t *data, size_t len)
{
    nghttp2_session *session = h->session;
    nghttp2_session_consume_connection(session, len);
    st->body_total += len;
    if (st->body_total > h->c->w->cfg->max_body) {
        upload_failed(h, st, 413);
        return;
    }
    if (!st->upload_paused) body_deadline_restart(h, st);
    if (st->body_mode == BODY_PIPE) {
        int rc = edge_pipe_write(st->upload, (const char *)data, len);
        if (rc == EDGE_PIPE_GONE) {
            st->upload = NULL;
            st->body_mode = BODY_DISCARD;
        } else if (rc == EDGE_PIPE_PAUSE || st->upload_paused) {
            st->upload_paused = 1;
            st->window_held += len;
            ev_timer_stop(h->c->w->loop, &st->body_deadline);   /* waiting on the origin */
            return;
        }
    }
    nghttp2_session_consume_stream(session, st->id, len);
}

