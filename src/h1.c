/* HTTP/1.1: llhttp callbacks fill an edge_request; the input side and the
 * connection's hooks. Responses: h1_response.c; streamed request bodies:
 * h1_upload.c. */
#include "h1.h"
#include "h1_internal.h"
#include "access_log.h"
#include "common.h"
#include "conn.h"
#include "dispatch.h"
#include "log.h"
#include "request.h"
#include "worker.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

static edge_h1 *h1_of(llhttp_t *p)
{
    return edge_container_of(p, edge_h1, parser);
}

/* ---- rejecting bad requests ---- */

/* Answers status without running Lua and closes the connection after it. */
void edge_h1_reject(edge_h1 *h, int status)
{
    edge_conn *c = h->c;
    edge_response *resp = &h->req.resp;
    edge_log(EDGE_LOG_INFO, c->id, "bad request: %d %s (%s)", status, edge_http_reason(status),
             llhttp_get_error_reason(&h->parser) ? llhttp_get_error_reason(&h->parser) : "-");
    edge_response_error(resp, status);
    h->keep_alive = 0;
    h->req.is_head = 0;
    h->state = H1_CLOSING;
    edge_h1_encode_response(h);
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
    req->upgrade = (p->flags & F_UPGRADE) && (p->flags & F_CONNECTION_UPGRADE);
    int chunked = (p->flags & F_CHUNKED) != 0;
    int has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_length && p->content_length > cfg->max_body) return fail(h, 413);
    req->has_body = chunked || (has_length && p->content_length > 0);
    if (req->has_body) edge_conn_set_timeout(h->c, cfg->body_timeout);
    int rc = handle_expect(h, req->has_body);
    if (rc != 0 || !has_length || p->content_length <= cfg->body_buffer) return rc;
    edge_h1_start_upload(h, (int64_t)p->content_length);    /* too large to hold: streamed from the start */
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
        edge_h1_start_upload(h, -1);
        edge_h1_upload_write(h, at, n);
        return HPE_PAUSED;                             /* parse_some dispatches */
    }
    return edge_h1_upload_write(h, at, n) ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *p)
{
    edge_h1 *h = h1_of(p);
    h->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    if (h->body_mode != BODY_WHOLE) {    /* a streamed body's end: the request was dispatched */
        edge_h1_upload_end(h);
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

/* ---- input ---- */

static void dispatch(edge_h1 *h)
{
    edge_conn *c = h->c;
    edge_conn_set_timeout(c, 0);
    edge_dispatch_start(&h->req);
    /* A body still arriving: the client has --body-timeout between reads. */
    if (c->state == EDGE_CONN_OPEN && edge_h1_uploading(h) && !h->upload_paused)
        edge_conn_set_timeout(c, c->w->cfg->body_timeout);
}

static int can_parse(const edge_h1 *h)
{
    if (h->c->state != EDGE_CONN_OPEN) return 0;
    /* After a pause the parser may owe a callback with no byte left (the
     * pipe filled on the body's last byte: message complete is due). */
    if (edge_h1_uploading(h)) return !h->upload_paused && (h->c->in.len > 0 || h->upload_resumed);
    return h->c->in.len > 0 && (h->state == H1_IDLE || h->state == H1_READING);
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
        h->upload_resumed = 0;
        edge_buf_reserve(&c->in, 1);          /* a base even for the zero-length run */
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
            edge_h1_reject(h, status_for_error(h, e));
            break;
        } else {                            /* a streamed body, the request already dispatched */
            edge_h1_upload_failed(h, status_for_error(h, e));
            break;
        }
        if (h->dispatch_now) {
            h->dispatch_now = 0;
            dispatch(h);
        }
        if (h->state == H1_DRAINING && !edge_h1_uploading(h)) edge_h1_next_request(h);
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
    if (edge_h1_uploading(h) && c->in.len == 0) {   /* the client stopped sending mid-body: it is gone */
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
void edge_h1_process_input(edge_h1 *h)
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
    if (h->state == H1_IDLE || h->state == H1_READING || edge_h1_uploading(h)) edge_h1_process_input(h);
    /* Otherwise the bytes wait (pipelining); reading pauses if they pile up. */
}

static void h1_on_drained(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->state == H1_STREAMING) edge_h1_pump_body(h);
    if (c->state != EDGE_CONN_OPEN) return;
    /* Also with nothing buffered: after_input resumes reading or closes. */
    if (h->state == H1_IDLE || h->state == H1_READING || edge_h1_uploading(h)) edge_h1_process_input(h);
}

/* The client finished sending: a request in progress and the complete ones
 * buffered are answered (after_input closes after the last); the half-sent
 * request, if any, is dropped. Only a failed write cancels a request. */
static void h1_on_eof(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->state == H1_IDLE || h->state == H1_READING || edge_h1_uploading(h)) edge_h1_process_input(h);
}

static void h1_on_timeout(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (edge_h1_uploading(h)) {
        if (h->upload_paused) return;       /* waiting on the origin: not the client's time */
        edge_log(EDGE_LOG_INFO, c->id, "client timed out sending its request body");
        edge_h1_upload_failed(h, 408);
    } else if (h->state == H1_READING) {
        edge_log(EDGE_LOG_INFO, c->id, "client timed out sending its request");
        edge_h1_reject(h, 408);
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
    edge_h1_commit_log_lines(h, 1);      /* responses cut short by the close: logged as they are */
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
    edge_dispatch_client_gone(&h->req);     /* 499 in the access log, as nginx logs it */
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

/* Between requests, with every access log line written: the request's
 * buffers, the header scratch and the log buffers are rebuilt on demand. */
static int h1_trim(edge_conn *c)
{
    edge_h1 *h = c->proto_data;
    if (h->state != H1_IDLE || h->log_lines.len || h->log_marks.len) return 0;
    edge_request_reset(&h->req);
    edge_request_free(&h->req);
    edge_buf_free(&h->field);
    edge_buf_free(&h->value);
    edge_buf_free(&h->log_lines);
    edge_buf_free(&h->log_marks);
    return 1;
}

static const edge_proto h1_proto = {
    .on_data = h1_on_data,
    .on_drained = h1_on_drained,
    .on_sent = edge_h1_on_sent,
    .on_eof = h1_on_eof,
    .on_timeout = h1_on_timeout,
    .on_shutdown = h1_on_shutdown,
    .on_close = h1_on_close,
    .free = h1_free,
    .trim = h1_trim,
};

void edge_h1_attach(edge_conn *c)
{
    edge_h1 *h = edge_calloc(1, sizeof(*h));
    h->c = c;
    h->keep_alive = 1;
    llhttp_init(&h->parser, HTTP_REQUEST, &parser_settings);
    edge_request_init(&h->req, &edge_h1_request_ops, c->w, c->id);
    h->req.scheme = c->ssl ? "https" : "http";
    h->req.peer = &c->peer;         /* the request is reused: set once per connection */
    h->req.tls_version = c->ssl ? SSL_get_version(c->ssl) : NULL;
    c->proto = &h1_proto;
    c->proto_data = h;
    edge_conn_set_timeout(c, c->w->cfg->header_timeout);
}

