/* HTTP/2: nghttp2 callbacks fill one edge_request per stream; responses go
 * out through nghttp2_submit_response with a data provider.
 *
 * Rules kept here: the session is only freed from the connection's free hook,
 * never inside its own callbacks; a stream's user data is re-fetched (and may
 * be NULL) in every callback; nghttp2_session_mem_send is never called from
 * inside nghttp2_session_mem_recv. */
#include "h2.h"
#include "access_log.h"
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

typedef struct edge_h2_stream {
    edge_h2  *h2;
    int32_t   id;
    struct edge_h2_stream *prev, *next;
    size_t    header_bytes;
    size_t    body_sent;
    int       reject_status;        /* answer this without dispatching (413, 431) */
    unsigned  abusive : 1;          /* its header list ended the connection: ignore the rest */
    unsigned  dispatched : 1;       /* handed to the core; respond pending */
    unsigned  responded : 1;
    unsigned  submitted : 1;        /* a response was submitted: log it when the stream ends */
    edge_request req;               /* last: the protocol-neutral part */
} edge_h2_stream;

struct edge_h2 {
    edge_conn       *c;
    nghttp2_session *session;
    double           reset_tokens;  /* rapid-reset bucket: RST_STREAMs the client may still send */
    double           reset_refilled_at;
    edge_h2_stream  *streams;       /* every open stream we track */
    int              n_streams;
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

/* The stream ended: its access log line, with the time its last frame was
 * handed to the connection's output; a stream the client reset while edge
 * was still computing its response is logged as 499, as nginx does. */
static void log_stream(edge_h2 *h, edge_h2_stream *st)
{
    if (!edge_access_log_enabled()) return;
    if (!st->submitted && !st->dispatched) return;     /* never a request edge answered */
    if (!st->submitted) edge_response_set_status(&st->req.resp, 499);
    edge_access_log_request(h->c->w, &st->req);
    st->submitted = 0;
}

static void stream_free(edge_h2 *h, edge_h2_stream *st)
{
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
    return (ssize_t)n;
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
    if (with_body) {
        snprintf(length, sizeof(length), "%zu", resp->body.len);
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
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    int send_body = with_body && !st->req.is_head && resp->body.len > 0;
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
    st->responded = 1;
    st->dispatched = 0;
    submit_response(h, st);
    send_pending(h);       /* last: sending may close and free the stream */
}

static const edge_request_ops h2_request_ops = {.respond = h2_respond};

static void reject_stream(edge_h2 *h, edge_h2_stream *st, int status)
{
    edge_response_error(&st->req.resp, status);
    st->responded = 1;
    submit_response(h, st);
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
    nghttp2_session_set_stream_user_data(session, st->id, st);
    edge_conn_set_timeout(h->c, 0);
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
        st->abusive = 1;
        st->responded = 1;      /* never answered */
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
        edge_request_set_host(req, v, vlen);
    }
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user_data)
{
    edge_h2 *h = user_data;
    edge_h2_stream *st = stream_of(h, frame->hd.stream_id);
    if (st == NULL || st->dispatched || st->responded || st->abusive) return 0;
    int rv = count_header(h, st, nlen + vlen);
    if (rv != 0 || st->reject_status) return rv;
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
    if (st == NULL || st->responded || st->reject_status) return 0;
    if (st->req.body.len + len > h->c->w->cfg->max_body) {
        st->reject_status = 413;
        reject_stream(h, st, 413);
        return 0;
    }
    edge_buf_append(&st->req.body, data, len);
    st->req.has_body = 1;
    return 0;
}

/* The request is complete (END_STREAM): answer a rejection or dispatch it. */
static void request_complete(edge_h2 *h, edge_h2_stream *st)
{
    if (st->responded) return;
    if (st->reject_status) {
        reject_stream(h, st, st->reject_status);
        return;
    }
    st->dispatched = 1;
    edge_dispatch_start(&st->req);
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
    if (st == NULL) return 0;
    st->req.bytes_in += 9 + frame->hd.length;     /* frame header + payload */
    /* Headers too large for the limits get their 431 as soon as they end. */
    if (frame->hd.type == NGHTTP2_HEADERS && st->reject_status == 431 && !st->responded)
        reject_stream(h, st, 431);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) request_complete(h, st);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user_data)
{
    edge_h2 *h = user_data;
    edge_h2_stream *st = stream_of(h, id);
    if (st == NULL) return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    log_stream(h, st);
    if (st->dispatched) edge_dispatch_cancel(&st->req);   /* RST_STREAM while Lua waits */
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
    } else if (h->n_streams == 0) {
        edge_conn_set_timeout(c, c->w->cfg->keepalive_timeout);
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

static void h2_on_timeout(edge_conn *c)
{
    edge_h2 *h = c->proto_data;
    if (h->n_streams) return;
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
        if (st->dispatched) edge_dispatch_cancel(&st->req);
        st->dispatched = 0;
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

void edge_h2_attach(edge_conn *c)
{
    const edge_config *cfg = c->w->cfg;
    edge_h2 *h = edge_calloc(1, sizeof(*h));
    h->c = c;
    h->reset_tokens = RESET_BURST;
    h->reset_refilled_at = ev_now(c->w->loop);
    if (nghttp2_session_server_new2(&h->session, callbacks, h, options) != 0) {
        free(h);
        edge_conn_close(c);
        return;
    }
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)cfg->max_header_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, settings, EDGE_ARRAY_LEN(settings));
    nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
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

    nghttp2_option_new(&options);
    nghttp2_option_set_no_auto_window_update(options, 0);
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
