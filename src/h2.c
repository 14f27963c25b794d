/* HTTP/2: nghttp2 callbacks fill one edge_request per stream; responses go
 * out through nghttp2_submit_response with a data provider.
 *
 * Rules kept here: the session is only freed from the connection's free hook,
 * never inside its own callbacks; a stream's user data is re-fetched (and may
 * be NULL) in every callback; nghttp2_session_mem_send is never called from
 * inside nghttp2_session_mem_recv.
 *
 * Deadlines: a stream that waits on the client (its header block, its body,
 * or the client taking its response) has its own one-shot timer, armed only
 * in that phase; a stream that waits on edge (dispatched, or its response
 * being produced) counts as busy, and the connection's idle timer runs only
 * while no stream is busy. Every stream therefore ends within a bound.
 *
 * Flow control: WINDOW_UPDATEs are ours (no automatic ones). Every DATA byte
 * gives the connection window back; a stream's window is given back only
 * while its body stays within --max-body, so a stream never takes more than
 * --max-body plus one window of the client's data. A body past --body-buffer
 * streams (edge.proxy): the request is dispatched with req.body_pipe, and
 * the stream's window comes back only as fast as the pipe's consumer (the
 * upstream connection) takes the bytes: the client sends no faster than the
 * origin reads. */
#include "h2.h"
#include "h2_internal.h"
#include "access_log.h"
#include "common.h"
#include "dispatch.h"
#include "log.h"
#include "slab.h"
#include "worker.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;

/* ---- streams ---- */

static edge_h2_stream *stream_of(edge_h2 *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static int phase_busy(enum stream_phase p)
{
    return p == ST_DISPATCHED || p == ST_SENDING;
}

/* The deadline of a phase that waits on the client; 0 for the others. */
static double phase_timeout(const edge_config *cfg, enum stream_phase p)
{
    switch (p) {
    case ST_HEADERS: return cfg->header_timeout;
    case ST_BODY:    return cfg->body_timeout;
    case ST_SENDING: return cfg->send_timeout;
    default:         return 0;
    }
}

/* The connection's idle (keep-alive) timer runs while no stream is busy:
 * streams that wait on the client have deadlines of their own. */
static void idle_update(edge_h2 *h)
{
    edge_conn *c = h->c;
    if (c->state != EDGE_CONN_OPEN) return;
    edge_conn_set_timeout(c, h->n_busy ? 0 : c->w->cfg->keepalive_timeout);
}

/* A stream made progress (new request, body bytes): restart the idle timer. */
static void idle_touch(edge_h2 *h)
{
    if (h->n_busy == 0) idle_update(h);
}

/* Restarts the phase's deadline (progress in a phase that waits on the client). */
void edge_h2_deadline_restart(edge_h2_stream *st)
{
    if (!ev_is_active(&st->deadline)) return;
    ev_timer_again(st->h2->c->w->loop, &st->deadline);
}

void edge_h2_set_phase(edge_h2 *h, edge_h2_stream *st, enum stream_phase to)
{
    struct ev_loop *loop = h->c->w->loop;
    int was_busy = phase_busy(st->phase), busy = phase_busy(to);
    st->phase = to;
    ev_timer_stop(loop, &st->deadline);
    double t = h->c->state == EDGE_CONN_OPEN ? phase_timeout(h->c->w->cfg, to) : 0;
    if (t > 0) {
        st->deadline.repeat = t;
        ev_timer_again(loop, &st->deadline);
    }
    if (busy == was_busy) return;
    h->n_busy += busy ? 1 : -1;
    if (h->n_busy == (busy ? 1 : 0)) idle_update(h);   /* the first busy stream, or the last */
}

static int answered(const edge_h2_stream *st)
{
    return st->phase >= ST_SENDING;
}

/* The stream ended: its access log line, with the time its last frame was
 * handed to the connection's output; a stream the client reset while edge
 * was still computing its response is logged as 499, as nginx does. */
static void log_stream(edge_h2 *h, edge_h2_stream *st)
{
    if (!edge_access_log_enabled()) return;
    if (!st->submitted && st->phase != ST_DISPATCHED) return;     /* never a request edge answered */
    if (!st->submitted) edge_response_set_status(&st->req.resp, 499);
    edge_access_log_request(h->c->w, &st->req);
    st->submitted = 0;
}

/* Ended streams are kept per worker, their request buffers with them, and
 * reused by the next stream of any connection: a stream then costs no
 * allocation (on the HTTP/2 hot path malloc and free were 14 % of the CPU).
 * Bounded: at most SPARE_STREAMS a worker, each buffer at most the 8 KiB
 * edge_request_reset keeps. Under AddressSanitizer they are freed, so that a
 * use after the end of a stream is still reported. */
#ifdef EDGE_ASAN
#define SPARE_STREAMS 0
#else
#define SPARE_STREAMS 128
#endif

static edge_h2_stream *stream_take(edge_worker *w)
{
    edge_h2_stream *st = w->spare_h2_streams;
    if (st == NULL) return edge_calloc(1, sizeof(*st));
    w->spare_h2_streams = st->next;
    w->n_spare_h2_streams--;
    memset(st, 0, offsetof(edge_h2_stream, req));   /* the request was reset when it ended */
    return st;
}

static void stream_destroy(edge_h2_stream *st)
{
    edge_request_free(&st->req);
    free(st);
}

static void stream_give(edge_worker *w, edge_h2_stream *st)
{
    if (w->n_spare_h2_streams >= SPARE_STREAMS) {
        stream_destroy(st);
        return;
    }
    edge_request_reset(&st->req);
    st->next = w->spare_h2_streams;
    w->spare_h2_streams = st;
    w->n_spare_h2_streams++;
}

void edge_h2_free_spares(edge_worker *w)
{
    while (w->spare_h2_streams) {
        edge_h2_stream *st = w->spare_h2_streams;
        w->spare_h2_streams = st->next;
        stream_destroy(st);
    }
    w->n_spare_h2_streams = 0;
}

/* Unlinks and frees; the caller has cancelled a dispatched request. Touches
 * no connection timer: it also runs from the free hook. */

static void stream_free(edge_h2 *h, edge_h2_stream *st)
{
    edge_h2_upload_abandon(h, st);          /* before the request frees the pipe: no cancel hook then */
    ev_timer_stop(h->c->w->loop, &st->deadline);
    if (phase_busy(st->phase)) h->n_busy--;
    if (st->prev) st->prev->next = st->next;
    else h->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    h->n_streams--;
    stream_give(h->c->w, st);
}

/* ---- request assembly (nghttp2 callbacks) ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    edge_h2 *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (h->closing) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    edge_h2_stream *st = stream_take(h->c->w);
    st->h2 = h;
    st->id = frame->hd.stream_id;
    ev_init(&st->deadline, edge_h2_on_deadline);
    edge_request_init(&st->req, &edge_h2_request_ops, h->c->w, h->c->id);
    st->req.version = "2";
    st->req.peer = &h->c->peer;
    st->req.scheme = h->c->ssl ? "https" : "http";
    st->req.tls_version = h->c->ssl ? SSL_get_version(h->c->ssl) : NULL;
    st->req.start = ev_now(h->c->w->loop);
    st->next = h->streams;
    if (h->streams) h->streams->prev = st;
    h->streams = st;
    h->n_streams++;
    ev_init(&st->body_deadline, edge_h2_on_body_deadline);
    nghttp2_session_set_stream_user_data(session, st->id, st);
    edge_h2_set_phase(h, st, ST_HEADERS);
    idle_touch(h);
    return 0;
}

/* Counts a header toward the limits: over them the stream gets 431; far over
 * them (an HPACK bomb) the connection ends with ENHANCE_YOUR_CALM. */
static int count_header(edge_h2 *h, edge_h2_stream *st, size_t bytes)
{
    const edge_config *cfg = h->c->w->cfg;
    st->header_bytes += bytes + 32;            /* RFC 9113 header list size accounting */
    size_t count = (size_t)st->req.n_headers;
    if (st->header_bytes > cfg->max_header_size * ABUSE_FACTOR || count > (size_t)cfg->max_headers * ABUSE_FACTOR) {
        /* GOAWAY after this frame; the rest of the block is decoded but ignored. */
        edge_log(EDGE_LOG_INFO, h->c->id, "http2 header list far over the limits: GOAWAY");
        nghttp2_session_terminate_session(h->session, NGHTTP2_ENHANCE_YOUR_CALM);
        st->abusive = 1;        /* never answered */
        return 0;
    }
    if (st->header_bytes > cfg->max_header_size || count >= (size_t)cfg->max_headers) st->reject_status = 431;
    return 0;
}

static void take_pseudo(edge_h2_stream *st, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
    edge_request *req = &st->req;
    const char *v = (const char *)value;
    if (nlen == 7 && memcmp(name, ":method", 7) == 0) {
        req->method = edge_request_store(req, v, vlen);
        req->is_head = vlen == 4 && memcmp(v, "HEAD", 4) == 0;
    } else if (nlen == 5 && memcmp(name, ":path", 5) == 0) {
        edge_request_set_target(req, edge_request_store(req, v, vlen));
    } else if (nlen == 10 && memcmp(name, ":authority", 10) == 0) {
        req->authority = edge_request_store(req, v, vlen);
        edge_request_set_host(req, v, vlen);
    }
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user_data)
{
    edge_h2 *h = user_data;
    edge_h2_stream *st = stream_of(h, frame->hd.stream_id);
    if (st == NULL || answered(st) || st->abusive) return 0;
    int rv = count_header(h, st, nlen + vlen);
    if (rv != 0 || st->reject_status) return rv;
    if (st->phase != ST_HEADERS) return 0;     /* trailers: counted, never request headers */
    if (nlen && name[0] == ':') {
        take_pseudo(st, name, nlen, value, vlen);
        return 0;
    }
    edge_request_add_header(&st->req, (const char *)name, nlen, (const char *)value, vlen);
    if (nlen == 4 && memcmp(name, "host", 4) == 0 && st->req.host.off == EDGE_SPAN_NONE)
        edge_request_set_host(&st->req, (const char *)value, vlen);
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user_data)
{
    edge_h2 *h = user_data;
    edge_h2_stream *st = stream_of(h, id);
    if (st && st->body_mode != BODY_WHOLE) {
        edge_h2_upload_data(h, st, data, len);
        return 0;
    }
    /* The connection window always comes back: a rejected or reset stream's
     * bytes must not starve the others. */
    if (st == NULL || st->phase != ST_BODY || st->reject_status) {
        nghttp2_session_consume_connection(session, len);
        return 0;
    }
    if (st->req.body.len + len > h->c->w->cfg->max_body) {
        nghttp2_session_consume_connection(session, len);
        st->reject_status = 413;
        edge_h2_reject_stream(h, st, 413);     /* and no more window for this stream */
        return 0;
    }
    if (st->req.body.len + len > h->c->w->cfg->body_buffer) {   /* too large to hold: it streams */
        edge_h2_start_upload(h, st);
        edge_h2_upload_data(h, st, data, len);
        edge_h2_set_phase(h, st, ST_DISPATCHED);
        edge_dispatch_start(&st->req);
        return 0;
    }
    edge_buf_append(&st->req.body, data, len);
    st->req.has_body = 1;
    nghttp2_session_consume(session, id, len);   /* within --max-body: the stream's window too */
    edge_h2_deadline_restart(st);
    idle_touch(h);
    return 0;
}

/* The request is complete (END_STREAM): answer a rejection or dispatch it. */
static void request_complete(edge_h2 *h, edge_h2_stream *st)
{
    if (st->body_mode != BODY_WHOLE) {          /* a streamed body's end: dispatched already */
        if (st->upload) edge_pipe_end(st->upload, 1);
        st->upload = NULL;
        edge_h2_upload_abandon(h, st);
        return;
    }
    if (st->phase != ST_HEADERS && st->phase != ST_BODY) return;   /* answered or reset */
    if (st->reject_status) {
        edge_h2_reject_stream(h, st, st->reject_status);
        return;
    }
    edge_h2_set_phase(h, st, ST_DISPATCHED);
    edge_dispatch_start(&st->req);
}

static int is_connect(const edge_request *req)
{
    return req->method.len == 7 && memcmp(edge_request_ptr(req, req->method), "CONNECT", 7) == 0;
}

/* The request's header block ended: answer what cannot be served, or wait
 * for the body. */
static void headers_complete(edge_h2 *h, edge_h2_stream *st, int end_stream)
{
    if (st->phase != ST_HEADERS) return;        /* trailers */
    if (st->reject_status == 431) {             /* too large: answered as soon as it ends */
        edge_h2_reject_stream(h, st, 431);
    } else if (is_connect(&st->req)) {          /* no tunnels, as over HTTP/1.1 */
        st->reject_status = 501;
        edge_h2_reject_stream(h, st, 501);
    } else if (!end_stream) {
        edge_h2_set_phase(h, st, ST_BODY);
    }
}

/* Rapid reset (CVE-2023-44487): a token bucket of RST_STREAMs per
 * connection, stricter than nghttp2's own (which answers INTERNAL_ERROR). */
static void count_reset(edge_h2 *h)
{
    double now = ev_now(h->c->w->loop);
    h->reset_tokens += (now - h->reset_refilled_at) * RESET_RATE;
    if (h->reset_tokens > RESET_BURST) h->reset_tokens = RESET_BURST;
    h->reset_refilled_at = now;
    if (--h->reset_tokens >= 0) return;
    edge_log(EDGE_LOG_INFO, h->c->id, "http2 rapid reset: GOAWAY");
    nghttp2_session_terminate_session(h->session, NGHTTP2_ENHANCE_YOUR_CALM);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    edge_h2 *h = user_data;
    if (frame->hd.type == NGHTTP2_RST_STREAM) count_reset(h);
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    edge_h2_stream *st = stream_of(h, frame->hd.stream_id);
    if (st == NULL || st->abusive) return 0;
    st->req.bytes_in += 9 + frame->hd.length;     /* frame header + payload */
    int end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS) headers_complete(h, st, end_stream);
    if (end_stream) request_complete(h, st);
    return 0;
}

/* A response's last frame went out. If the client has not finished its
 * request (answered early: 413, 431, 408, or before the body ended), ask it
 * to stop with RST_STREAM NO_ERROR (RFC 9113 section 8.1) rather than keep
 * the stream open for a body no one reads. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    edge_h2 *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    edge_h2_stream *st = stream_of(h, frame->hd.stream_id);
    if (st == NULL || st->phase != ST_SENDING) return 0;
    edge_h2_set_phase(h, st, ST_SENT);
    if (!nghttp2_session_get_stream_remote_close(session, st->id))
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

/* RFC 9113 section 5.1.1: a stream opens with an id above every id the
 * client used before; nghttp2 1.52 ignores a lower one when it no longer
 * knows that stream. A HEADERS frame for a stream nghttp2 still holds is
 * trailers (or late, after our RST_STREAM): nghttp2 handles it. */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data)
{
    edge_h2 *h = user_data;
    if (hd->type != NGHTTP2_HEADERS || hd->stream_id % 2 == 0) return 0;   /* nghttp2 checks those */
    if (hd->stream_id > h->max_client_id) {
        h->max_client_id = hd->stream_id;
        return 0;
    }
    if (nghttp2_session_find_stream(session, hd->stream_id)) return 0;
    edge_log(EDGE_LOG_INFO, h->c->id, "http2 HEADERS opens stream %d below stream %d: PROTOCOL_ERROR",
             hd->stream_id, h->max_client_id);
    nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user_data)
{
    edge_h2 *h = user_data;
    edge_h2_stream *st = stream_of(h, id);
    if (st == NULL) return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    log_stream(h, st);
    edge_h2_upload_abandon(h, st);
    if (st->phase == ST_DISPATCHED) edge_dispatch_client_gone(&st->req);   /* RST_STREAM while Lua waits */
    edge_h2_set_phase(h, st, ST_CLOSED);    /* may restart the idle timer */
    stream_free(h, st);
    return 0;
}

/* ---- the connection ---- */

static void finish_if_idle(edge_h2 *h)
{
    edge_conn *c = h->c;
    if (c->state != EDGE_CONN_OPEN) return;
    if (!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session)) {
        edge_conn_close_after_flush(c);
    } else if (h->closing && h->n_streams == 0 && edge_conn_pending(c) == 0) {
        edge_conn_close_after_flush(c);
    }
}

/* Serialises what nghttp2 has queued into the connection's output, up to
 * OUT_HIGH at a time. Returns EDGE_ERROR when the session failed. */
static int produce(edge_h2 *h)
{
    edge_conn *c = h->c;
    while (edge_conn_pending(c) < OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);
        if (n < 0) {
            edge_log(EDGE_LOG_INFO, c->id, "http2 send failed: %s", nghttp2_strerror((int)n));
            return EDGE_ERROR;
        }
        if (n == 0) break;
        edge_conn_write(c, data, (size_t)n);
    }
    return EDGE_OK;
}

#define SEND_ROUNDS 4   /* OUT_HIGH-sized rounds per call, then the loop serves others */

/* Sends what nghttp2 has queued: in rounds while the socket takes it all; when
 * it does not, on_drained continues; after SEND_ROUNDS, the write watcher does. */
void edge_h2_send_pending(edge_h2 *h)
{
    edge_conn *c = h->c;
    if (h->in_recv || c->state != EDGE_CONN_OPEN) return;
    for (int round = 0; round < SEND_ROUNDS; round++) {
        if (produce(h) != EDGE_OK) {
            edge_conn_close(c);
            return;
        }
        int rc = edge_conn_flush(c);
        if (rc == EDGE_DONE || rc == EDGE_AGAIN) return;
        if (!nghttp2_session_want_write(h->session)) {
            finish_if_idle(h);
            return;
        }
    }
    ev_io_start(c->w->loop, &c->wio);   /* more to send: continue from the loop */
}

static void h2_on_data(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    h->in_recv = 1;
    ssize_t n = nghttp2_session_mem_recv(h->session, (const uint8_t *)c->in.base, c->in.len);
    h->in_recv = 0;
    if (c->state != EDGE_CONN_OPEN) return;
    if (n < 0) {
        /* Fatal: a bad preface, a flood, a callback failure. Say GOAWAY if we can. */
        edge_log(EDGE_LOG_INFO, c->id, "http2 connection error: %s", nghttp2_strerror((int)n));
        uint32_t code = n == NGHTTP2_ERR_FLOODED || n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                            ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR;
        if (n != NGHTTP2_ERR_BAD_CLIENT_MAGIC) nghttp2_session_terminate_session(h->session, code);
        edge_buf_consume(&c->in, c->in.len);
        edge_h2_send_pending(h);
        if (c->state == EDGE_CONN_OPEN) edge_conn_close_after_flush(c);
        return;
    }
    edge_buf_consume(&c->in, (size_t)n);
    edge_conn_resume_read(c);      /* fill_input pauses at IN_MAX; all of it was consumed */
    edge_h2_send_pending(h);
}

void edge_h2_on_drained(edge_conn *c)
{
    edge_h2_send_pending(c->proto_data);
}

/* The idle timer: no stream busy for --keepalive-timeout. Streams that wait on
 * the client do not keep the connection. */
static void h2_on_timeout(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    if (h->n_busy) return;
    if (h->n_streams)
        edge_log(EDGE_LOG_INFO, c->id, "http2 connection idle with %d streams waiting on the client: GOAWAY",
                 h->n_streams);
    nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);   /* idle: GOAWAY */
    edge_h2_send_pending(h);
    if (c->state == EDGE_CONN_OPEN) edge_conn_close_after_flush(c);
}

/* Graceful GOAWAY: in-flight streams finish, new ones are refused. */
static void h2_on_shutdown(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    h->closing = 1;
    nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR, NULL, 0);
    edge_h2_send_pending(h);
}

static void h2_on_close(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    for (edge_h2_stream *st = h->streams; st; st = st->next) {
        log_stream(h, st);
        edge_h2_upload_abandon(h, st);
        if (st->phase == ST_DISPATCHED) edge_dispatch_client_gone(&st->req);
        edge_h2_set_phase(h, st, ST_CLOSED);   /* stops its deadline; the connection is closed: no timer restarts */
    }
}

static void h2_free(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    nghttp2_session_del(h->session);   /* calls no stream-close callbacks */
    while (h->streams) stream_free(h, h->streams);
    free(h);
}

static const edge_proto h2_proto = {
    .on_data = h2_on_data,
    .on_drained = edge_h2_on_drained,
    .on_timeout = h2_on_timeout,
    .on_shutdown = h2_on_shutdown,
    .on_close = h2_on_close,
    .free = h2_free,
};

/* nghttp2's allocations go through the worker's slab (slab.h): a stream
 * costs it a dozen short-lived blocks of a few sizes. */
static void *slab_malloc(size_t n, void *slab) { return edge_slab_alloc(slab, n); }
static void slab_free(void *p, void *slab) { edge_slab_free(slab, p); }
static void *slab_calloc(size_t count, size_t n, void *slab) { return edge_slab_calloc(slab, count, n); }
static void *slab_realloc(void *p, size_t n, void *slab) { return edge_slab_realloc(slab, p, n); }

/* Creates the session and queues our SETTINGS; NULL when nghttp2 runs out of
 * memory (its own allocations do not go through edge_malloc). */
static nghttp2_session *session_new(edge_h2 *h, const edge_config *cfg)
{
    nghttp2_session *session;
    nghttp2_mem mem = {&h->c->w->slab, slab_malloc, slab_free, slab_calloc, slab_realloc};
    if (nghttp2_session_server_new3(&session, callbacks, h, options, &mem) != 0) return NULL;
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)cfg->max_header_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, EDGE_ARRAY_LEN(settings)) != 0 ||
        nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0) {
        nghttp2_session_del(session);
        return NULL;
    }
    return session;
}

void edge_h2_attach(edge_conn *c)
{
    const edge_config *cfg = c->w->cfg;
    edge_h2 *h = edge_calloc(1, sizeof(*h));
    h->c = c;
    h->reset_tokens = RESET_BURST;
    h->reset_refilled_at = ev_now(c->w->loop);
    h->session = session_new(h, cfg);
    if (h->session == NULL) {
        /* c->proto stays NULL: the connection was never counted as open
         * (attach_protocol counts it only once a protocol is attached). */
        edge_log(EDGE_LOG_ERR, c->id, "http2 session set-up failed: out of memory");
        free(h);
        edge_conn_close(c);
        return;
    }
    c->proto = &h2_proto;
    c->proto_data = h;
    edge_conn_set_timeout(c, cfg->keepalive_timeout);
}

void edge_h2_global_init(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);

    nghttp2_option_new(&options);
    nghttp2_option_set_no_auto_window_update(options, 1);   /* ours: see on_data_chunk */
    nghttp2_option_set_max_settings(options, 32);           /* entries per SETTINGS frame */
    nghttp2_option_set_max_outbound_ack(options, 1000);     /* SETTINGS/PING ack flood */
    nghttp2_option_set_stream_reset_rate_limit(options, 1000, 33);   /* rapid reset */
    nghttp2_option_set_max_continuations(options, 8);       /* CONTINUATION flood */
    nghttp2_option_set_max_deflate_dynamic_table_size(options, 4096);
}

void edge_h2_global_free(void)
{
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_option_del(options);
}

