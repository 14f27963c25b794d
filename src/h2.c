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
#include "access_log.h"
#include "body_pipe.h"
#include "common.h"
#include "conn.h"
#include "dispatch.h"
#include "log.h"
#include "request.h"
#include "worker.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_HIGH        (256 * 1024)   /* queued output above which we stop producing frames */
#define STREAM_WINDOW   (256 * 1024)   /* per-stream receive window for request bodies */
#define CONN_WINDOW     (1024 * 1024)
#define ABUSE_FACTOR    4              /* header lists this many times over the limits end the connection */
#define RESET_BURST     500            /* RST_STREAMs a client may send at once ... */
#define RESET_RATE      50             /* ... and per second after that */

typedef struct edge_h2 edge_h2;

enum { BODY_WHOLE, BODY_PIPE, BODY_DISCARD };   /* what becomes of a request body's bytes */

/* What a stream waits for. HEADERS, BODY and SENDING wait on the client and
 * have a deadline; DISPATCHED and SENDING are busy (edge has work to do). */
enum stream_phase {
    ST_NEW,
    ST_HEADERS,      /* header block arriving: --header-timeout from the first HEADERS */
    ST_BODY,         /* request body arriving: --body-timeout between DATA frames */
    ST_DISPATCHED,   /* the core has it (Lua, cache): the core's own bounds */
    ST_SENDING,      /* response submitted: --send-timeout between two of its DATA frames */
    ST_SENT,         /* response ended; nghttp2 closes the stream (after our RST if need be) */
    ST_RESET,        /* we submitted RST_STREAM; nghttp2 closes the stream once it is sent */
    ST_CLOSED
};

typedef struct edge_h2_stream {
    edge_h2  *h2;
    int32_t   id;
    enum stream_phase phase;        /* changed only through set_phase */
    struct edge_h2_stream *prev, *next;
    ev_timer  deadline;             /* active only in a phase that waits on the client */
    size_t    header_bytes;
    size_t    body_sent;
    int       reject_status;        /* answer this without dispatching (413, 431) */
    unsigned  abusive : 1;          /* its header list ended the connection: ignore the rest */
    unsigned  submitted : 1;        /* a response was submitted: log it when the stream ends */
    unsigned  deferred : 1;         /* its streamed body waits on the origin (NGHTTP2_ERR_DEFERRED) */
    /* a request body past --body-buffer, arriving while the request is dispatched */
    unsigned  body_mode : 2;        /* BODY_WHOLE, BODY_PIPE (into upload), BODY_DISCARD */
    unsigned  upload_paused : 1;    /* the pipe is full: the stream's window is held back */
    edge_pipe *upload;              /* BODY_PIPE: the pipe we produce */
    uint64_t  body_total;           /* body bytes received, against --max-body */
    size_t    window_held;          /* DATA bytes whose stream window is not given back yet */
    ev_timer  body_deadline;        /* --body-timeout between DATA frames while it streams */
    edge_request req;               /* last: the protocol-neutral part */
} edge_h2_stream;

struct edge_h2 {
    edge_conn       *c;
    nghttp2_session *session;
    double           reset_tokens;  /* rapid-reset bucket: RST_STREAMs the client may still send */
    double           reset_refilled_at;
    edge_h2_stream  *streams;       /* every open stream we track */
    int              n_streams;
    int              n_busy;        /* streams in ST_DISPATCHED or ST_SENDING */
    int32_t          max_client_id; /* highest stream id a client HEADERS opened */
    unsigned         in_recv : 1;   /* inside nghttp2_session_mem_recv */
    unsigned         closing : 1;   /* GOAWAY sent: close once the streams finish */
};

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;

static void send_pending(edge_h2 *h);

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
static void deadline_restart(edge_h2_stream *st)
{
    if (!ev_is_active(&st->deadline)) return;
    ev_timer_again(st->h2->c->w->loop, &st->deadline);
}

static void set_phase(edge_h2 *h, edge_h2_stream *st, enum stream_phase to)
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

/* Unlinks and frees; the caller has cancelled a dispatched request. Touches
 * no connection timer: it also runs from the free hook. */
static void upload_abandon(edge_h2 *h, edge_h2_stream *st);

static void stream_free(edge_h2 *h, edge_h2_stream *st)
{
    upload_abandon(h, st);          /* before the request frees the pipe: no cancel hook then */
    ev_timer_stop(h->c->w->loop, &st->deadline);
    if (phase_busy(st->phase)) h->n_busy--;
    if (st->prev) st->prev->next = st->next;
    else h->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    h->n_streams--;
    edge_request_free(&st->req);
    free(st);
}

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
    if (n) deadline_restart(st);    /* the client took more: its send deadline starts over */
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
    deadline_restart(st);
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
    send_pending(h);
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

    snprintf(status, sizeof(status), "%d", resp->status);
    nva[n++] = NV(":status", status, strlen(status));
    if (!resp->has_server) nva[n++] = NV("server", EDGE_SERVER, sizeof(EDGE_SERVER) - 1);
    if (!resp->has_date) {
        const char *date = edge_worker_http_date(h->c->w);
        nva[n++] = NV("date", date, strlen(date));
    }
    int64_t body_len = resp->pipe ? resp->pipe->length : (int64_t)resp->body.len;
    if (with_body && body_len >= 0) {
        snprintf(length, sizeof(length), "%lld", (long long)body_len);
        nva[n++] = NV("content-length", length, strlen(length));
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
    set_phase(h, st, ST_SENDING);
    submit_response(h, st);
    send_pending(h);       /* last: sending may close and free the stream */
}

static const edge_request_ops h2_request_ops = {.respond = h2_respond};

static void reject_stream(edge_h2 *h, edge_h2_stream *st, int status)
{
    edge_response_error(&st->req.resp, status);
    set_phase(h, st, ST_SENDING);
    submit_response(h, st);
}

/* Ends the stream with RST_STREAM; nghttp2 closes (and we free) it once sent. */
static void reset_stream(edge_h2 *h, edge_h2_stream *st, uint32_t code)
{
    set_phase(h, st, ST_RESET);
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, code);
}

/* A stream waited on the client past its phase's deadline. */
static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_h2_stream *st = edge_container_of(t, edge_h2_stream, deadline);
    edge_h2 *h = st->h2;
    ev_timer_stop(loop, t);
    if (h->c->state != EDGE_CONN_OPEN) return;
    switch (st->phase) {
    case ST_HEADERS:
        edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: header block incomplete after %.0fs: RST_STREAM",
                 st->id, t->repeat);
        reset_stream(h, st, NGHTTP2_CANCEL);
        break;
    case ST_BODY:
        edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: no request body for %.0fs: 408", st->id, t->repeat);
        reject_stream(h, st, 408);
        break;
    case ST_SENDING:
        edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: client took none of the response for %.0fs: RST_STREAM",
                 st->id, t->repeat);
        reset_stream(h, st, NGHTTP2_CANCEL);
        break;
    default:
        return;
    }
    send_pending(h);
}

/* ---- request bodies past --body-buffer ---- */

/* The stream ends (closed, reset, the connection gone) mid-body: the pipe
 * fails, so the origin request does too. */
static void upload_abandon(edge_h2 *h, edge_h2_stream *st)
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
    ev_feed_event(h->c->w->loop, &h->c->wio, EV_WRITE);   /* h2_on_drained sends the WINDOW_UPDATE */
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
static void start_upload(edge_h2 *h, edge_h2_stream *st)
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

static void reject_stream(edge_h2 *h, edge_h2_stream *st, int status);
static void reset_stream(edge_h2 *h, edge_h2_stream *st, uint32_t code);

/* The client failed its streamed body (past --max-body, too slow): the pipe
 * fails (the origin request is aborted); the client gets status if no
 * response began, else RST_STREAM. */
static void upload_failed(edge_h2 *h, edge_h2_stream *st, int status)
{
    edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: the streamed request body failed: %d", st->id, status);
    upload_abandon(h, st);
    st->reject_status = status;     /* its later DATA frames only give the connection window back */
    if (st->phase == ST_DISPATCHED) {
        edge_dispatch_cancel(&st->req);
        reject_stream(h, st, status);
    } else if (st->phase == ST_SENDING) {
        reset_stream(h, st, NGHTTP2_INTERNAL_ERROR);
    }
}

static void on_body_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_h2_stream *st = edge_container_of(t, edge_h2_stream, body_deadline);
    edge_h2 *h = st->h2;
    ev_timer_stop(loop, t);
    if (h->c->state != EDGE_CONN_OPEN || st->upload_paused || st->body_mode == BODY_WHOLE) return;
    edge_log(EDGE_LOG_INFO, h->c->id, "http2 stream %d: no request body for %.0fs", st->id, t->repeat);
    upload_failed(h, st, 408);
    send_pending(h);
}

/* DATA of a streamed body: into the pipe (its window held while the pipe is
 * full), or dropped. The connection window always comes back. */
static void upload_data(edge_h2 *h, edge_h2_stream *st, const uint8_t *data, size_t len)
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

/* ---- request assembly (nghttp2 callbacks) ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    edge_h2 *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (h->closing) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    edge_h2_stream *st = edge_calloc(1, sizeof(*st));
    st->h2 = h;
    st->id = frame->hd.stream_id;
    ev_init(&st->deadline, on_deadline);
    edge_request_init(&st->req, &h2_request_ops, h->c->w, h->c->id);
    st->req.version = "2";
    st->req.peer = &h->c->peer;
    st->req.scheme = h->c->ssl ? "https" : "http";
    st->req.tls_version = h->c->ssl ? SSL_get_version(h->c->ssl) : NULL;
    st->req.start = ev_now(h->c->w->loop);
    st->next = h->streams;
    if (h->streams) h->streams->prev = st;
    h->streams = st;
    h->n_streams++;
    ev_init(&st->body_deadline, on_body_deadline);
    nghttp2_session_set_stream_user_data(session, st->id, st);
    set_phase(h, st, ST_HEADERS);
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
        upload_data(h, st, data, len);
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
        reject_stream(h, st, 413);     /* and no more window for this stream */
        return 0;
    }
    if (st->req.body.len + len > h->c->w->cfg->body_buffer) {   /* too large to hold: it streams */
        start_upload(h, st);
        upload_data(h, st, data, len);
        set_phase(h, st, ST_DISPATCHED);
        edge_dispatch_start(&st->req);
        return 0;
    }
    edge_buf_append(&st->req.body, data, len);
    st->req.has_body = 1;
    nghttp2_session_consume(session, id, len);   /* within --max-body: the stream's window too */
    deadline_restart(st);
    idle_touch(h);
    return 0;
}

/* The request is complete (END_STREAM): answer a rejection or dispatch it. */
static void request_complete(edge_h2 *h, edge_h2_stream *st)
{
    if (st->body_mode != BODY_WHOLE) {          /* a streamed body's end: dispatched already */
        if (st->upload) edge_pipe_end(st->upload, 1);
        st->upload = NULL;
        upload_abandon(h, st);
        return;
    }
    if (st->phase != ST_HEADERS && st->phase != ST_BODY) return;   /* answered or reset */
    if (st->reject_status) {
        reject_stream(h, st, st->reject_status);
        return;
    }
    set_phase(h, st, ST_DISPATCHED);
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
        reject_stream(h, st, 431);
    } else if (is_connect(&st->req)) {          /* no tunnels, as over HTTP/1.1 */
        st->reject_status = 501;
        reject_stream(h, st, 501);
    } else if (!end_stream) {
        set_phase(h, st, ST_BODY);
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
    set_phase(h, st, ST_SENT);
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
    upload_abandon(h, st);
    if (st->phase == ST_DISPATCHED) edge_dispatch_cancel(&st->req);   /* RST_STREAM while Lua waits */
    set_phase(h, st, ST_CLOSED);    /* may restart the idle timer */
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
static void send_pending(edge_h2 *h)
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
        send_pending(h);
        if (c->state == EDGE_CONN_OPEN) edge_conn_close_after_flush(c);
        return;
    }
    edge_buf_consume(&c->in, (size_t)n);
    edge_conn_resume_read(c);      /* fill_input pauses at IN_MAX; all of it was consumed */
    send_pending(h);
}

static void h2_on_drained(edge_conn *c)
{
    send_pending(c->proto_data);
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
    send_pending(h);
    if (c->state == EDGE_CONN_OPEN) edge_conn_close_after_flush(c);
}

/* Graceful GOAWAY: in-flight streams finish, new ones are refused. */
static void h2_on_shutdown(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    h->closing = 1;
    nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR, NULL, 0);
    send_pending(h);
}

static void h2_on_close(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    for (edge_h2_stream *st = h->streams; st; st = st->next) {
        log_stream(h, st);
        upload_abandon(h, st);
        if (st->phase == ST_DISPATCHED) edge_dispatch_cancel(&st->req);
        set_phase(h, st, ST_CLOSED);   /* stops its deadline; the connection is closed: no timer restarts */
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
    .on_drained = h2_on_drained,
    .on_timeout = h2_on_timeout,
    .on_shutdown = h2_on_shutdown,
    .on_close = h2_on_close,
    .free = h2_free,
};

/* Creates the session and queues our SETTINGS; NULL when nghttp2 runs out of
 * memory (its own allocations do not go through edge_malloc). */
static nghttp2_session *session_new(edge_h2 *h, const edge_config *cfg)
{
    nghttp2_session *session;
    if (nghttp2_session_server_new2(&session, callbacks, h, options) != 0) return NULL;
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
