/* HTTP/1.1: llhttp callbacks fill an edge_request; responses are encoded here. */
#include "h1.h"
#include "access_log.h"
#include "body_pipe.h"
#include "common.h"
#include "conn.h"
#include "dispatch.h"
#include "log.h"
#include "request.h"
#include "tunnel.h"
#include "worker.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define OUT_HIGH (256 * 1024)   /* queued output above which pipelined requests wait */

enum h1_state {
    H1_IDLE,         /* between requests */
    H1_READING,      /* a request has begun arriving */
    H1_DISPATCHED,   /* complete; the core is producing its response */
    H1_STREAMING,    /* the head is out; the body comes from resp.pipe (edge.proxy) */
    H1_DRAINING,     /* the response is queued; the request's streamed body is still
                      * arriving, discarded: the next request follows its end */
    H1_CLOSING       /* the last response is queued; the connection closes after it */
};

/* What becomes of a request body's bytes. */
enum h1_body {
    BODY_WHOLE,      /* into req.body (up to --body-buffer), or no body */
    BODY_PIPE,       /* past --body-buffer: into the pipe h->upload, the request dispatched */
    BODY_DISCARD     /* streamed, but nobody reads it any more: dropped to its end */
};

typedef struct edge_h1 {
    edge_conn     *c;
    llhttp_t       parser;
    enum h1_state  state;
    int            error_status;     /* set by a callback that rejects the request */
    size_t         url_len;
    size_t         header_bytes;
    edge_buf       field;            /* the header name being received */
    edge_buf       value;            /* the header value being received */
    unsigned       in_parse : 1;     /* inside process_input: respond must not re-enter it */
    unsigned       keep_alive : 1;
    unsigned       has_te : 1;       /* a Transfer-Encoding field was received */
    unsigned       te_unsupported : 1;
    unsigned       in_trailers : 1;  /* the head is complete: fields now are chunked trailers */
    unsigned       value_started : 1; /* the current field value had a span */
    unsigned       value_ended : 1;  /* ... which reached the end of its line */
    unsigned       tail_at_line_start : 1;  /* the last parsed bytes ended in LF [SP/HTAB]* */
    unsigned       stop_after : 1;   /* server draining: close after this response */
    unsigned       chunked : 1;      /* the streamed body goes out in chunks */
    unsigned       dispatch_now : 1; /* a callback made the request ready: parse_some dispatches */
    unsigned       upload_paused : 1;   /* the pipe is full: the parser and reading wait for resume */
    enum h1_body   body_mode;
    edge_pipe     *upload;           /* BODY_PIPE: the pipe we produce (req.body_pipe, or taken) */
    uint64_t       body_total;       /* body bytes of the current request, against --max-body */
    edge_buf       log_lines;        /* access log lines of responses still being written */
    edge_buf       log_marks;        /* one log_mark per line, in response order */
    size_t         log_next;         /* the first mark not yet committed */
    edge_request   req;              /* last: the protocol-neutral part */
} edge_h1;

/* Where a response ends in the connection's output, so its access log line
 * gets the time its last byte was written (nginx's $request_time). */
typedef struct log_mark {
    uint64_t done_at;      /* c->out_flushed + c->out.len after the response */
    double   start;        /* the request's start */
    size_t   line_end;     /* end of its line in log_lines */
} log_mark;

static void process_input(edge_h1 *h);
static void encode_response(edge_h1 *h);
static void start_upload(edge_h1 *h, int64_t length);
static int upload_write(edge_h1 *h, const char *at, size_t n);
static void upload_end(edge_h1 *h);
static void upload_failed(edge_h1 *h, int status);

static edge_h1 *h1_of(llhttp_t *p)
{
    return edge_container_of(p, edge_h1, parser);
}

/* ---- rejecting bad requests ---- */

/* Answers status without running Lua and closes the connection after it. */
static void reject(edge_h1 *h, int status)
{
    edge_conn *c = h->c;
    edge_response *resp = &h->req.resp;
    edge_log(EDGE_LOG_INFO, c->id, "bad request: %d %s (%s)", status, edge_http_reason(status),
             llhttp_get_error_reason(&h->parser) ? llhttp_get_error_reason(&h->parser) : "-");
    edge_response_error(resp, status);
    h->keep_alive = 0;
    h->req.is_head = 0;
    h->state = H1_CLOSING;
    encode_response(h);
    edge_conn_close_after_flush(c);
}

/* A method llhttp does not know, but that is a well-formed token, is "not
 * implemented"; anything else on the request line is just bad. */
static int unknown_method_status(const edge_conn *c)
{
    size_t i = 0;
    while (i < c->in.len && i < 32 && edge_http_is_tchar((unsigned char)c->in.base[i])) i++;
    return i > 0 && i < c->in.len && c->in.base[i] == ' ' ? 501 : 400;
}

static int status_for_error(edge_h1 *h, llhttp_errno_t e)
{
    if (h->error_status) return h->error_status;
    switch (e) {
    case HPE_INVALID_METHOD: return unknown_method_status(h->c);
    case HPE_INVALID_VERSION: return 505;
    case HPE_INVALID_TRANSFER_ENCODING: return h->te_unsupported ? 501 : 400;
    default: return 400;
    }
}

static int fail(edge_h1 *h, int status)
{
    h->error_status = status;
    return HPE_USER;
}

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

static int uploading(const edge_h1 *h)
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
static void start_upload(edge_h1 *h, int64_t length)
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
    if (req->body.len) upload_write(h, req->body.base, req->body.len);
    req->body.len = 0;
}

/* Hands body bytes to the pipe; returns 1 when it is full (the parser
 * pauses: on_body returns HPE_PAUSED). */
static int upload_write(edge_h1 *h, const char *at, size_t n)
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
static void upload_end(edge_h1 *h)
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
static void upload_failed(edge_h1 *h, int status)
{
    edge_log(EDGE_LOG_INFO, h->c->id, "request %s: the streamed request body failed: %d",
             edge_request_id(&h->req), status);
    if (h->upload) edge_pipe_end(h->upload, 0);
    h->upload = NULL;
    h->body_mode = BODY_WHOLE;
    h->upload_paused = 0;
    if (h->state == H1_DISPATCHED) {
        edge_dispatch_cancel(&h->req);
        reject(h, status);
        return;
    }
    if (h->state != H1_CLOSING) edge_conn_close(h->c);
}

/* ---- llhttp callbacks ---- */

static int on_message_begin(llhttp_t *p)
{
    edge_h1 *h = h1_of(p);
    h->state = H1_READING;
    h->url_len = h->header_bytes = 0;
    h->has_te = h->te_unsupported = h->in_trailers = 0;
    h->body_total = 0;
    h->req.start = ev_now(h->c->w->loop);
    /* Not reset by later reads: a client trickling bytes is still cut off. */
    edge_conn_set_timeout(h->c, h->c->w->cfg->header_timeout);
    return 0;
}

/* The end of the bytes llhttp is parsing: parse_some hands it all of c->in. */
static const char *input_end(const edge_h1 *h)
{
    return h->c->in.base + h->c->in.len;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    edge_h1 *h = h1_of(p);
    /* A target that ends the line has no HTTP version (HTTP/0.9): llhttp
     * would wait for one more line; it is just a bad request. */
    if (at + n < input_end(h) && (at[n] == '\r' || at[n] == '\n')) return fail(h, 400);
    /* The target is the first thing stored in req->data, so it stays contiguous. */
    h->url_len += n;
    if (h->url_len > h->c->w->cfg->max_request_line) return fail(h, 414);
    edge_buf_append(&h->req.data, at, n);
    return 0;
}

static int count_header_bytes(edge_h1 *h, size_t n)
{
    h->header_bytes += n;
    return h->header_bytes > h->c->w->cfg->max_header_size ? fail(h, 431) : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    edge_h1 *h = h1_of(p);
    edge_buf_append(&h->field, at, n);
    return count_header_bytes(h, n);
}

/* Whether at (the first byte of a field value) follows a line break and
 * nothing but SP/HTAB: the value began on a continuation line. */
static int after_line_break(const edge_h1 *h, const char *at)
{
    const char *base = h->c->in.base;
    while (at > base && (at[-1] == ' ' || at[-1] == '\t')) at--;
    return at > base ? at[-1] == '\n' : h->tail_at_line_start;
}

/* llhttp accepts obs-fold (a field line continued on a line that starts with
 * SP or HTAB) and joins the lines; RFC 9112 5.2 lets a server reject it
 * instead, which we do: a value span after the value's line ended, or a
 * first span that begins on a continuation line, is a fold. (A continuation
 * line of only whitespace after an empty value gives no span; llhttp reads
 * it as the empty value it amounts to.) */
static int is_obs_fold(const edge_h1 *h, const char *at, size_t n)
{
    if (h->value_ended) return 1;
    return !h->value_started && n > 0 && after_line_break(h, at);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    edge_h1 *h = h1_of(p);
    if (is_obs_fold(h, at, n)) return fail(h, 400);
    h->value_started = 1;
    if (at + n < input_end(h) && (at[n] == '\r' || at[n] == '\n')) h->value_ended = 1;
    edge_buf_append(&h->value, at, n);
    return count_header_bytes(h, n);
}

static int is_chunked_only(const char *v, size_t n)
{
    /* llhttp decodes chunked framing; any other coding we cannot undo. */
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    return n == 7 && strncasecmp(v, "chunked", 7) == 0;
}

/* Adds the field just received to the request; Host and Transfer-Encoding
 * are also noted for the framing checks. */
static int add_field(edge_h1 *h)
{
    edge_request *req = &h->req;
    if (req->n_headers >= h->c->w->cfg->max_headers) return fail(h, 431);
    if (h->field.len == 0) return fail(h, 400);   /* an empty field name, as nginx */
    size_t vlen = h->value.len;
    while (vlen && (h->value.base[vlen - 1] == ' ' || h->value.base[vlen - 1] == '\t')) vlen--;
    const char *name = h->field.base, *value = h->value.base ? h->value.base : "";
    size_t nlen = h->field.len;
    if (nlen == 4 && strncasecmp(name, "host", 4) == 0) {
        if (req->host.off != EDGE_SPAN_NONE) return fail(h, 400);   /* RFC 9112 3.2: one Host */
        edge_request_set_host(req, value, vlen);
    }
    if (nlen == 17 && strncasecmp(name, "transfer-encoding", 17) == 0) {
        h->has_te = 1;
        if (!is_chunked_only(value, vlen)) h->te_unsupported = 1;
    }
    edge_request_add_header(req, name, nlen, value, vlen);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    edge_h1 *h = h1_of(p);
    /* Chunked trailer fields (llhttp reports them like header fields) are
     * dropped: nothing in the request may change once the head was read. */
    int rc = h->in_trailers ? 0 : add_field(h);
    h->field.len = h->value.len = 0;
    h->value_started = h->value_ended = 0;
    return rc;
}

/* Answers Expect: 100-continue before the body is read; other expectations fail. */
static int handle_expect(edge_h1 *h, int has_body)
{
    const edge_header *e = edge_request_header(&h->req, "expect", 6);
    if (e == NULL || h->parser.http_minor == 0) return 0;
    if (e->value.len != 12 || strncasecmp(edge_request_ptr(&h->req, e->value), "100-continue", 12) != 0)
        return fail(h, 417);
    if (has_body) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        edge_conn_write(h->c, cont, sizeof(cont) - 1);
        /* Not flushed here: process_input flushes after parsing, and a
         * failed write must not close the connection under llhttp's feet. */
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    edge_h1 *h = h1_of(p);
    edge_request *req = &h->req;
    const edge_config *cfg = h->c->w->cfg;

    if (p->http_major != 1 || p->http_minor > 1) return fail(h, 505);
    req->version = p->http_minor == 0 ? "1.0" : "1.1";
    /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing. */
    if (p->http_minor == 0 && h->has_te) return fail(h, 400);
    if (p->method == HTTP_CONNECT) return fail(h, 501);
    if (h->te_unsupported) return fail(h, 501);
    if (p->http_minor == 1 && req->host.off == EDGE_SPAN_NONE) return fail(h, 400);

    if (edge_request_set_target(req, (edge_span){0, (uint32_t)h->url_len}) != EDGE_OK) return fail(h, 400);
    h->in_trailers = 1;
    const char *method = llhttp_method_name((llhttp_method_t)p->method);
    req->method = edge_request_store(req, method, strlen(method));
    req->is_head = p->method == HTTP_HEAD;
    int chunked = (p->flags & F_CHUNKED) != 0;
    int has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_length && p->content_length > cfg->max_body) return fail(h, 413);
    req->has_body = chunked || (has_length && p->content_length > 0);
    if (req->has_body) edge_conn_set_timeout(h->c, cfg->body_timeout);
    int rc = handle_expect(h, req->has_body);
    if (rc != 0 || !has_length || p->content_length <= cfg->body_buffer) return rc;
    start_upload(h, (int64_t)p->content_length);    /* too large to hold: streamed from the start */
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    edge_h1 *h = h1_of(p);
    const edge_config *cfg = h->c->w->cfg;
    h->body_total += n;
    if (h->body_total > cfg->max_body) return fail(h, 413);
    edge_conn_set_timeout(h->c, cfg->body_timeout);   /* between two reads, as nginx */
    if (h->body_mode == BODY_WHOLE && h->req.body.len + n <= cfg->body_buffer) {
        edge_buf_append(&h->req.body, at, n);
        return 0;
    }
    if (h->body_mode == BODY_WHOLE) {                  /* it grew past --body-buffer: stream it */
        start_upload(h, -1);
        upload_write(h, at, n);
        return HPE_PAUSED;                             /* parse_some dispatches */
    }
    return upload_write(h, at, n) ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *p)
{
    edge_h1 *h = h1_of(p);
    h->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    if (h->body_mode != BODY_WHOLE) {    /* a streamed body's end: the request was dispatched */
        upload_end(h);
        return HPE_PAUSED;
    }
    h->state = H1_DISPATCHED;
    h->dispatch_now = 1;
    return HPE_PAUSED;   /* one request at a time: process_input dispatches it */
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- responses ---- */

static void put(edge_buf *b, const char *s, size_t n)
{
    edge_buf_append(b, s, n);
}
#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_header(edge_buf *b, const char *name, size_t nlen, const char *value, size_t vlen)
{
    edge_buf_reserve(b, nlen + vlen + 4);
    put(b, name, nlen);
    PUT_LIT(b, ": ");
    put(b, value, vlen);
    PUT_LIT(b, "\r\n");
}

/* ---- access log: lines committed when their response's last byte is written ---- */

static void defer_log_line(edge_h1 *h)
{
    if (!edge_access_log_enabled()) return;
    edge_access_log_format(h->c->w, &h->req, &h->log_lines);
    log_mark m = {h->c->out_flushed + h->c->out.len, h->req.start, h->log_lines.len};
    edge_buf_append(&h->log_marks, &m, sizeof(m));
}

/* Commits the lines of responses written by now (all: every line, the
 * connection is closing). */
/* Removes the committed lines and marks from the front, so a client that
 * keeps one response always in flight (pipelining while reading slowly)
 * holds only its pending lines, not every line of the connection. */
static void drop_committed(edge_h1 *h)
{
    const log_mark *marks = (const log_mark *)h->log_marks.base;
    size_t line_bytes = marks[h->log_next - 1].line_end;
    edge_buf_consume(&h->log_lines, line_bytes);
    edge_buf_consume(&h->log_marks, h->log_next * sizeof(log_mark));
    log_mark *rest = (log_mark *)h->log_marks.base;
    for (size_t i = 0; i < h->log_marks.len / sizeof(log_mark); i++) rest[i].line_end -= line_bytes;
    h->log_next = 0;
}

static void commit_log_lines(edge_h1 *h, int all)
{
    edge_conn *c = h->c;
    size_t n = h->log_marks.len / sizeof(log_mark);
    if (h->log_next == n) return;
    const log_mark *marks = (const log_mark *)h->log_marks.base;
    uint64_t written = c->out_flushed + c->out_sent;
    double now = ev_now(c->w->loop);
    while (h->log_next < n && (all || marks[h->log_next].done_at <= written)) {
        const log_mark *m = &marks[h->log_next];
        size_t begin = h->log_next ? marks[h->log_next - 1].line_end : 0;
        edge_access_log_commit(c->w, h->log_lines.base + begin, m->line_end - begin, now - m->start);
        h->log_next++;
    }
    if (h->log_next == n) {
        h->log_next = 0;
        edge_buf_reset(&h->log_lines, 1024);
        edge_buf_reset(&h->log_marks, 256);
    } else if (h->log_next > 0) {
        drop_committed(h);
    }
}

static void h1_on_sent(edge_conn *c)
{
    commit_log_lines(c->proto_data, 0);
}

/* Encodes req->resp into the connection's output. */
static void encode_response(edge_h1 *h)
{
    const edge_response *resp = &h->req.resp;
    edge_buf *out = &h->c->out;
    edge_worker_on_response(h->c->w, &h->req);
    char num[24];
    const char *reason = edge_http_reason(resp->status);
    size_t reason_len = strlen(reason);
    edge_buf_reserve(out, 160 + reason_len + resp->data.len + resp->n_headers * 4 + resp->body.len);

    PUT_LIT(out, "HTTP/1.1 ");
    put(out, num, edge_format_u64(num, (unsigned)resp->status));
    PUT_LIT(out, " ");
    put(out, reason, reason_len);
    PUT_LIT(out, "\r\n");
    if (!resp->has_server) PUT_LIT(out, "Server: " EDGE_SERVER "\r\n");
    if (!resp->has_date) {
        PUT_LIT(out, "Date: ");
        edge_buf_append_str(out, edge_worker_http_date(h->c->w));
        PUT_LIT(out, "\r\n");
    }
    int with_body = edge_http_status_has_body(resp->status);
    h->chunked = 0;
    if (with_body && resp->pipe && resp->pipe->length < 0) {
        /* No length from the origin: chunked for HTTP/1.1, the close ends it for 1.0. */
        if (h->req.version[2] == '1') {
            h->chunked = !h->req.is_head;
            PUT_LIT(out, "Transfer-Encoding: chunked\r\n");
        } else {
            h->keep_alive = 0;
        }
    } else if (with_body) {
        PUT_LIT(out, "Content-Length: ");
        put(out, num, edge_format_u64(num, resp->pipe ? (uint64_t)resp->pipe->length : resp->body.len));
        PUT_LIT(out, "\r\n");
    }
    if (!h->keep_alive) PUT_LIT(out, "Connection: close\r\n");
    else if (h->req.version[2] == '0') PUT_LIT(out, "Connection: keep-alive\r\n");
    if (h->c->w->cfg->request_id_header) {
        PUT_LIT(out, "X-Request-Id: ");
        edge_buf_append_str(out, edge_request_id(&h->req));
        PUT_LIT(out, "\r\n");
    }
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *hd = &resp->headers[i];
        put_header(out, resp->data.base + hd->name.off, hd->name.len, resp->data.base + hd->value.off,
                   hd->value.len);
    }
    PUT_LIT(out, "\r\n");
    if (resp->pipe) return;      /* the body streams; its log line is written at its end */
    if (with_body && !h->req.is_head) put(out, resp->body.base, resp->body.len);
    defer_log_line(h);
}

/* ---- streamed bodies (edge.proxy) ----
 *
 * The pipe's bytes go to the connection's output while it holds less than
 * OUT_HIGH; on_drained asks for more. The pipe resumes the origin read as
 * it empties: a slow client slows the origin, and at most about OUT_HIGH
 * plus the pipe's bound is held per response. */

static void response_sent(edge_h1 *h);
static void next_request(edge_h1 *h);

/* An origin that failed mid-body: the client must not take a cut body for a
 * whole one, so the connection closes without the last chunk (or short of
 * Content-Length), as nginx does. */
static void stream_failed(edge_h1 *h)
{
    edge_log(EDGE_LOG_INFO, h->c->id, "request %s: the origin's body ended early: connection closed",
             edge_request_id(&h->req));
    h->state = H1_CLOSING;          /* what came goes out; the missing end tells the client */
    edge_pipe_close(h->req.resp.pipe);
    h->req.resp.pipe = NULL;
    edge_access_log_request(h->c->w, &h->req);
    edge_conn_close_after_flush(h->c);
}

static void put_chunk(edge_h1 *h, const char *p, size_t n)
{
    edge_buf *out = &h->c->out;
    if (!h->chunked) {
        put(out, p, n);
        return;
    }
    edge_buf_printf(out, "%zx\r\n", n);
    put(out, p, n);
    PUT_LIT(out, "\r\n");
}

/* Moves what the pipe holds into the output, up to OUT_HIGH. */
static void fill_output(edge_h1 *h, edge_pipe *p)
{
    edge_conn *c = h->c;
    while (edge_pipe_readable(p) > 0 && edge_conn_pending(c) < OUT_HIGH) {
        size_t n = edge_pipe_readable(p), room = OUT_HIGH - edge_conn_pending(c);
        if (n > room) n = room;
        put_chunk(h, edge_pipe_data(p), n);
        h->req.resp.streamed += n;
        edge_pipe_consume(p, n);
    }
}

#define PUMP_ROUNDS 4   /* OUT_HIGH-sized rounds per call, then the loop serves others */

/* Writes the pipe's bytes while the socket takes them. Every way out leaves
 * something that calls again: the pipe's ready (it is empty), on_drained
 * (the socket is full), or the fed write event (PUMP_ROUNDS done). */
static void pump_body(edge_h1 *h)
{
    edge_conn *c = h->c;
    edge_pipe *p = h->req.resp.pipe;
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        fill_output(h, p);
        if (edge_pipe_failed(p)) {
            stream_failed(h);
            return;
        }
        if (edge_pipe_done(p)) {
            if (h->chunked) PUT_LIT(&c->out, "0\r\n\r\n");
            edge_pipe_close(p);
            h->req.resp.pipe = NULL;
            defer_log_line(h);
            response_sent(h);
            return;
        }
        if (edge_conn_flush(c) != EDGE_OK) return;   /* closed, or on_drained goes on */
        if (edge_pipe_readable(p) == 0) return;      /* on_pipe_ready goes on */
    }
    ev_feed_event(c->w->loop, &c->wio, EV_WRITE);
}

/* The pipe has bytes, or ended. */
static void on_pipe_ready(void *ud)
{
    edge_h1 *h = ud;
    if (h->state != H1_STREAMING || h->c->state != EDGE_CONN_OPEN) return;
    pump_body(h);
}

static void start_stream(edge_h1 *h)
{
    h->state = H1_STREAMING;
    edge_pipe_consumer consumer = {.ready = on_pipe_ready, .ud = h};
    edge_pipe_set_consumer(h->req.resp.pipe, &consumer);
    pump_body(h);
}

/* ops->respond: the core finished the current request. */
static void h1_respond(edge_request *req)
{
    edge_h1 *h = edge_container_of(req, edge_h1, req);
    edge_conn *c = h->c;
    if (h->stop_after || c->w->stopping) h->keep_alive = 0;
    if (c->read_eof && c->in.len == 0) h->keep_alive = 0;   /* the client sent all it will */
    if (edge_tunnel_ready(req)) {
        /* WebSocket: the origin's 101 makes the connection a byte tunnel
         * (tunnel.c), which from now on is c's protocol; h (and req, for
         * the tunnel's log line) stays until the connection is freed. */
        commit_log_lines(h, 1);
        h->state = H1_CLOSING;
        edge_tunnel_upgrade(c, req);
        return;
    }
    encode_response(h);
    if (req->resp.pipe && req->is_head) {       /* no body for the client; the cache may want it */
        edge_pipe_drain(req->resp.pipe);
        req->resp.pipe = NULL;
        defer_log_line(h);
    }
    if (req->resp.pipe) {
        start_stream(h);
        return;
    }
    response_sent(h);
}

/* The whole response is queued: the next request, or the close. A request
 * body still arriving is read to its end first (DRAINING), or the close
 * makes the linger drop it. */
static void response_sent(edge_h1 *h)
{
    edge_conn *c = h->c;
    edge_request_reset(&h->req);      /* a streamed body nobody took: discarded from now */
    if (h->stop_after || c->w->stopping) h->keep_alive = 0;    /* a drain began while it streamed */
    if (!h->keep_alive) {
        h->state = H1_CLOSING;
        edge_conn_close_after_flush(c);
        return;
    }
    if (uploading(h)) {
        h->state = H1_DRAINING;
        if (!h->upload_paused) edge_conn_set_timeout(c, c->w->cfg->body_timeout);
        if (!h->in_parse) process_input(h);
        return;
    }
    next_request(h);
}

/* Ready for the next request (pipelined ones are parsed now). */
static void next_request(edge_h1 *h)
{
    edge_conn *c = h->c;
    h->state = H1_IDLE;
    edge_conn_set_timeout(c, c->w->cfg->keepalive_timeout);
    if (!h->in_parse) process_input(h);   /* pipelined requests, and the flush */
}

static const edge_request_ops h1_request_ops = {.respond = h1_respond};

/* ---- input ---- */

static void dispatch(edge_h1 *h)
{
    edge_conn *c = h->c;
    edge_conn_set_timeout(c, 0);
    edge_dispatch_start(&h->req);
    /* A body still arriving: the client has --body-timeout between reads. */
    if (c->state == EDGE_CONN_OPEN && uploading(h) && !h->upload_paused)
        edge_conn_set_timeout(c, c->w->cfg->body_timeout);
}

static int can_parse(const edge_h1 *h)
{
    if (h->c->state != EDGE_CONN_OPEN || h->c->in.len == 0) return 0;
    if (uploading(h)) return !h->upload_paused;
    return h->state == H1_IDLE || h->state == H1_READING;
}

/* Whether bytes end in LF and nothing but SP/HTAB (when they hold nothing
 * else, what the bytes before them said): for the obs-fold check of a value
 * that starts at the beginning of the next read. */
static int ends_at_line_start(const char *p, size_t n, int before)
{
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    return n ? p[n - 1] == '\n' : before;
}

/* Parses buffered requests, one at a time, until one waits for the core or
 * the output passes OUT_HIGH: a pipelining client that never reads cannot
 * make us buffer without bound. */
static void parse_some(edge_h1 *h)
{
    edge_conn *c = h->c;
    h->in_parse = 1;
    while (can_parse(h) && edge_conn_pending(c) < OUT_HIGH) {
        llhttp_errno_t e = llhttp_execute(&h->parser, c->in.base, c->in.len);
        if (c->state != EDGE_CONN_OPEN) break;   /* never dispatch for a closed connection */
        if (e == HPE_OK) {
            h->tail_at_line_start = ends_at_line_start(c->in.base, c->in.len, h->tail_at_line_start);
            h->req.bytes_in += c->in.len;
            edge_buf_consume(&c->in, c->in.len);
        } else if (e == HPE_PAUSED) {
            h->tail_at_line_start = 0;   /* a message ended: the next one starts afresh */
            size_t used = (size_t)(llhttp_get_error_pos(&h->parser) - c->in.base);
            h->req.bytes_in += used;
            edge_buf_consume(&c->in, used);
            llhttp_resume(&h->parser);
        } else if (h->state == H1_IDLE || h->state == H1_READING) {
            reject(h, status_for_error(h, e));
            break;
        } else {                            /* a streamed body, the request already dispatched */
            upload_failed(h, status_for_error(h, e));
            break;
        }
        if (h->dispatch_now) {
            h->dispatch_now = 0;
            dispatch(h);
        }
        if (h->state == H1_DRAINING && !uploading(h)) next_request(h);
    }
    h->in_parse = 0;
}

#define PARSE_ROUNDS 4   /* OUT_HIGH-sized rounds per call, then the loop serves others */

/* After parsing: reading resumes (conn.c pauses it while IN_MAX bytes wait,
 * and OUT_HIGH bounds the output, so neither side grows without bound) -
 * also while output is pending, or a connection paused with only complete
 * requests buffered would never read again once they were answered. When
 * the client finished sending and no request is left, the connection
 * closes once the queued answers are out. */
static void after_input(edge_h1 *h)
{
    edge_conn *c = h->c;
    if (c->state != EDGE_CONN_OPEN || h->state == H1_CLOSING) return;
    if (!c->read_eof) {
        if (!h->upload_paused) edge_conn_resume_read(c);
        return;
    }
    if (uploading(h) && c->in.len == 0) {   /* the client stopped sending mid-body: it is gone */
        edge_log(EDGE_LOG_INFO, c->id, "client closed its side before the end of its request body");
        edge_conn_close(c);
        return;
    }
    if (h->state == H1_DISPATCHED || c->in.len > 0) return;   /* answers still to come */
    h->state = H1_CLOSING;   /* an incomplete request is dropped */
    edge_conn_close_after_flush(c);
}

/* Parses and sends in rounds while the socket takes everything; when it
 * does not, on_drained continues; after PARSE_ROUNDS, the write watcher does. */
static void process_input(edge_h1 *h)
{
    edge_conn *c = h->c;
    int flushed = 1;
    for (int round = 0; round < PARSE_ROUNDS; round++) {
        parse_some(h);
        if (c->state != EDGE_CONN_OPEN) return;
        int rc = edge_conn_flush(c);
        if (rc == EDGE_DONE) return;
        if (rc == EDGE_AGAIN) {
            flushed = 0;
            break;
        }
        if (!can_parse(h)) break;
    }
    if (flushed && can_parse(h)) ev_feed_event(c->w->loop, &c->wio, EV_WRITE);
    after_input(h);
}

static void h1_on_data(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->state == H1_IDLE || h->state == H1_READING || uploading(h)) process_input(h);
    /* Otherwise the bytes wait (pipelining); reading pauses if they pile up. */
}

static void h1_on_drained(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->state == H1_STREAMING) pump_body(h);
    if (c->state != EDGE_CONN_OPEN) return;
    /* Also with nothing buffered: after_input resumes reading or closes. */
    if (h->state == H1_IDLE || h->state == H1_READING || uploading(h)) process_input(h);
}

/* The client finished sending: a request in progress and the complete ones
 * buffered are answered (after_input closes after the last); the half-sent
 * request, if any, is dropped. Only a failed write cancels a request. */
static void h1_on_eof(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->state == H1_IDLE || h->state == H1_READING || uploading(h)) process_input(h);
}

static void h1_on_timeout(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (uploading(h)) {
        if (h->upload_paused) return;       /* waiting on the origin: not the client's time */
        edge_log(EDGE_LOG_INFO, c->id, "client timed out sending its request body");
        upload_failed(h, 408);
    } else if (h->state == H1_READING) {
        edge_log(EDGE_LOG_INFO, c->id, "client timed out sending its request");
        reject(h, 408);
    } else if (h->state == H1_IDLE && edge_conn_pending(c) > 0) {
        /* Not idle: a response is still being written, which --send-timeout
         * bounds; the keep-alive wait starts again from here. */
        edge_conn_set_timeout(c, c->w->cfg->keepalive_timeout);
    } else if (h->state == H1_IDLE) {
        edge_conn_close(c);      /* keep-alive idle timeout */
    }
}

static void h1_on_shutdown(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->state == H1_DISPATCHED || h->state == H1_STREAMING) {
        h->stop_after = 1;
    } else if (h->state == H1_DRAINING) {   /* the response is queued: send it, drop the body */
        h->state = H1_CLOSING;
        edge_conn_close_after_flush(c);
    } else if (h->state != H1_CLOSING) {
        edge_conn_close(c);
    }
}

static void h1_on_close(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->upload) edge_pipe_end(h->upload, 0);   /* gone mid-body: the origin request fails */
    h->upload = NULL;
    h->body_mode = BODY_WHOLE;
    commit_log_lines(h, 1);      /* responses cut short by the close: logged as they are */
    if (h->state == H1_STREAMING) {
        /* The client left, or the origin failed, mid-body: the origin read
         * stops (its connection is closed, not pooled) and the line says
         * how many bytes went out. */
        edge_pipe_close(h->req.resp.pipe);
        h->req.resp.pipe = NULL;
        edge_access_log_request(c->w, &h->req);
        return;
    }
    if (h->state != H1_DISPATCHED) return;
    edge_dispatch_cancel(&h->req);
    /* The client left before its response: logged as nginx does, 499. */
    edge_response_set_status(&h->req.resp, 499);
    edge_access_log_request(c->w, &h->req);
}

static void h1_free(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    edge_request_free(&h->req);
    edge_buf_free(&h->field);
    edge_buf_free(&h->value);
    edge_buf_free(&h->log_lines);
    edge_buf_free(&h->log_marks);
    free(h);
}

static const edge_proto h1_proto = {
    .on_data = h1_on_data,
    .on_drained = h1_on_drained,
    .on_sent = h1_on_sent,
    .on_eof = h1_on_eof,
    .on_timeout = h1_on_timeout,
    .on_shutdown = h1_on_shutdown,
    .on_close = h1_on_close,
    .free = h1_free,
};

void edge_h1_attach(edge_conn *c)
{
    edge_h1 *h = edge_calloc(1, sizeof(*h));
    h->c = c;
    h->keep_alive = 1;
    llhttp_init(&h->parser, HTTP_REQUEST, &parser_settings);
    edge_request_init(&h->req, &h1_request_ops, c->w, c->id);
    h->req.scheme = c->ssl ? "https" : "http";
    h->req.peer = &c->peer;         /* the request is reused: set once per connection */
    h->req.tls_version = c->ssl ? SSL_get_version(c->ssl) : NULL;
    c->proto = &h1_proto;
    c->proto_data = h;
    edge_conn_set_timeout(c, c->w->cfg->header_timeout);
}
