/* HTTP/2 responses: submitted whole or streamed from a pipe (edge.proxy),
 * stream resets and the per-stream deadlines (h2_internal.h). */
#include "h2_internal.h"
#include "common.h"
#include "log.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- responses ---- */

static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
    edge_h2_stream *st = src->ptr;
    const edge_buf *body = &st->req.resp.body;
    size_t n = body->len - st->body_sent;
    if (n > len) n = len;
    if (n) memcpy(buf, body->base + st->body_sent, n);
    st->body_sent += n;
    if (st->body_sent == body->len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (n) edge_h2_deadline_restart(st);    /* the client took more: its send deadline starts over */
    return (ssize_t)n;
}

/* A streamed body (edge.proxy): DATA as the pipe fills, under the client's
 * flow control; nghttp2 asks only when the window and OUT_HIGH allow, and
 * every byte taken lets the pipe resume the origin read. While the pipe is
 * empty the stream waits on the origin, not the client: no send deadline. */
static ssize_t read_pipe(nghttp2_session *session, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
    edge_h2_stream *st = src->ptr;
    edge_pipe *p = st->req.resp.pipe;
    if (edge_pipe_failed(p) && edge_pipe_readable(p) == 0) {
        edge_log(EDGE_LOG_INFO, st->h2->c->id, "http2 stream %d: the origin's body ended early: RST_STREAM",
                 st->id);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;   /* RST_STREAM INTERNAL_ERROR */
    }
    size_t n = edge_pipe_readable(p);
    if (n > len) n = len;
    if (n) memcpy(buf, edge_pipe_data(p), n);
    st->req.resp.streamed += n;
    edge_pipe_consume(p, n);
    if (edge_pipe_done(p)) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
        st->deferred = 1;
        ev_timer_stop(st->h2->c->w->loop, &st->deadline);
        return NGHTTP2_ERR_DEFERRED;
    }
    edge_h2_deadline_restart(st);
    return (ssize_t)n;
}

static void on_pipe_ready(void *ud)
{
    edge_h2_stream *st = ud;
    edge_h2 *h = st->h2;
    if (!st->deferred || h->c->state != EDGE_CONN_OPEN) return;
    st->deferred = 0;
    if (st->phase == ST_SENDING) {
        st->deadline.repeat = h->c->w->cfg->send_timeout;
        ev_timer_again(h->c->w->loop, &st->deadline);
    }
    nghttp2_session_resume_data(h->session, st->id);
    edge_h2_send_pending(h);
}

#define NV(n, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE})

static void submit_response(edge_h2 *h, edge_h2_stream *st)
{
    const edge_response *resp = &st->req.resp;
    char status[8], length[24];
    int with_body = edge_http_status_has_body(resp->status);
    size_t n = 0, max = 5 + (size_t)resp->n_headers;
    nghttp2_nv stack_nva[32];       /* no allocation for the usual response */
    nghttp2_nv *nva = max <= EDGE_ARRAY_LEN(stack_nva) ? stack_nva : edge_malloc(max * sizeof(*nva));

    edge_worker_on_response(h->c->w, &st->req);
    st->submitted = 1;

    nva[n++] = NV(":status", status, edge_format_u64(status, (unsigned)resp->status));   /* no printf per response */
    if (!resp->has_server) nva[n++] = NV("server", EDGE_SERVER, sizeof(EDGE_SERVER) - 1);
    if (!resp->has_date) {
        const char *date = edge_worker_http_date(h->c->w);
        nva[n++] = NV("date", date, strlen(date));
    }
    int64_t body_len = resp->pipe ? resp->pipe->length : (int64_t)resp->body.len;
    if (with_body && body_len >= 0) {
        nva[n++] = NV("content-length", length, edge_format_u64(length, (unsigned long long)body_len));
    }
    if (h->c->w->cfg->request_id_header) {
        const char *id = edge_request_id(&st->req);
        nva[n++] = NV("x-request-id", id, strlen(id));
    }
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *hd = &resp->headers[i];
        nva[n++] = (nghttp2_nv){(uint8_t *)resp->data.base + hd->name.off,
                                (uint8_t *)resp->data.base + hd->value.off, hd->name.len,
                                hd->value.len, NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = resp->pipe ? read_pipe : read_body};
    int send_body = with_body && !st->req.is_head && (resp->pipe || resp->body.len > 0);
    if (resp->pipe && !send_body) {            /* HEAD, 204, 304: the cache may still want the body */
        edge_pipe_drain(st->req.resp.pipe);
        st->req.resp.pipe = NULL;
    } else if (resp->pipe) {
        edge_pipe_consumer consumer = {.ready = on_pipe_ready, .ud = st};
        edge_pipe_set_consumer(resp->pipe, &consumer);
    }
    int rv = nghttp2_submit_response(h->session, st->id, nva, n, send_body ? &prd : NULL);
    if (nva != stack_nva) free(nva);
    if (rv != 0)
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

/* ops->respond: the core finished a stream's request. */
static void h2_respond(edge_request *req)
{
    edge_h2_stream *st = edge_container_of(req, edge_h2_stream, req);
    edge_h2 *h = st->h2;
    edge_h2_set_phase(h, st, ST_SENDING);
    submit_response(h, st);
    edge_h2_send_pending(h);       /* last: sending may close and free the stream */
}

const edge_request_ops edge_h2_request_ops = {.respond = h2_respond};

void edge_h2_reject_stream(edge_h2 *h, edge_h2_stream *st, int status)
{
    edge_response_error(&st->req.resp, status);
    edge_h2_set_phase(h, st, ST_SENDING);
    submit_response(h, st);
}

/* Ends the stream with RST_STREAM; nghttp2 closes (and we free) it once sent. */
void edge_h2_reset_stream(edge_h2 *h, edge_h2_stream *st, uint32_t code)
{
    edge_h2_set_phase(h, st, ST_RESET);
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, code);
}

/* A stream waited on the client past its phase's deadline. */
void edge_h2_on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_h2_stream *st = edge_container_of(t, edge_h2_stream, deadline);
    edge_h2 *h = st->h2;
    ev_timer_stop(loop, t);
    if (h->c->state != EDGE_CONN_OPEN) return;
    switch (st->phase) {
    case ST_HEADERS:
        edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: header block incomplete after %.0fs: RST_STREAM",
                 st->id, t->repeat);
        edge_h2_reset_stream(h, st, NGHTTP2_CANCEL);
        break;
    case ST_BODY:
        edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: no request body for %.0fs: 408", st->id, t->repeat);
        edge_h2_reject_stream(h, st, 408);
        break;
    case ST_SENDING:
        edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: client took none of the response for %.0fs: RST_STREAM",
                 st->id, t->repeat);
        edge_h2_reset_stream(h, st, NGHTTP2_CANCEL);
        break;
    default:
        return;
    }
    edge_h2_send_pending(h);
}

