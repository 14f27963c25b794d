/* HTTP/1.1 responses: encoding, streamed bodies (edge.proxy), and the access
 * log's timing (h1_internal.h). */
#include "h1_internal.h"
#include "access_log.h"
#include "common.h"
#include "conn.h"
#include "log.h"
#include "request.h"
#include "tunnel.h"
#include "worker.h"

#include <llhttp.h>
#include <string.h>
#include <sys/socket.h>

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

void edge_h1_commit_log_lines(edge_h1 *h, int all)
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

void edge_h1_on_sent(edge_conn *c)
{
    edge_h1_commit_log_lines(c->proto_data, 0);
}

/* Encodes req->resp into the connection's output. */
void edge_h1_encode_response(edge_h1 *h)
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

/* An origin that failed mid-body: the client must not take a cut body for a
 * whole one, so the connection closes without the last chunk (or short of
 * Content-Length), as nginx does. */
static void stream_failed(edge_h1 *h)
{
    edge_log(EDGE_LOG_INFO, h->c->id, "request %s: the origin's body ended early: connection closed",
             edge_request_id(&h->req));
    int close_delimited = !h->chunked && h->req.resp.pipe->length < 0;
    h->state = H1_CLOSING;
    edge_pipe_close(h->req.resp.pipe);
    h->req.resp.pipe = NULL;
    edge_access_log_request(h->c->w, &h->req);
    if (close_delimited) {
        /* HTTP/1.0, no length: a clean close would say "complete". A reset
         * (SO_LINGER 0) says it is not. */
        struct linger lg = {1, 0};
        setsockopt(h->c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        edge_conn_close(h->c);
        return;
    }
    edge_conn_close_after_flush(h->c);   /* what came goes out; the missing end tells the client */
}

static void put_chunk(edge_h1 *h, const char *p, size_t n)
{
    edge_buf *out = &h->c->out;
    if (!h->chunked) {
        put(out, p, n);
        return;
    }
    char size[20];                  /* the chunk size in hex, without printf (once per chunk) */
    size_t i = sizeof(size);
    size[--i] = '\n';
    size[--i] = '\r';
    size_t v = n;
    do {
        size[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v && i > 0);
    put(out, size + i, sizeof(size) - i);
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
void edge_h1_pump_body(edge_h1 *h)
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
    edge_h1_pump_body(h);
}

static void start_stream(edge_h1 *h)
{
    h->state = H1_STREAMING;
    edge_pipe_consumer consumer = {.ready = on_pipe_ready, .ud = h};
    edge_pipe_set_consumer(h->req.resp.pipe, &consumer);
    edge_h1_pump_body(h);
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
        edge_h1_commit_log_lines(h, 1);
        h->state = H1_CLOSING;
        edge_tunnel_upgrade(c, req);
        return;
    }
    edge_h1_encode_response(h);
    /* No body for the client (HEAD, or a status without one, even if the
     * script set it on an origin's response): the cache may still want it. */
    if (req->resp.pipe && (req->is_head || !edge_http_status_has_body(req->resp.status))) {
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
    if (edge_h1_uploading(h)) {
        h->state = H1_DRAINING;
        if (!h->upload_paused) edge_conn_set_timeout(c, c->w->cfg->body_timeout);
        if (!h->in_parse) edge_h1_process_input(h);
        return;
    }
    edge_h1_next_request(h);
}

/* Ready for the next request (pipelined ones are parsed now). */
void edge_h1_next_request(edge_h1 *h)
{
    edge_conn *c = h->c;
    h->state = H1_IDLE;
    edge_conn_set_timeout(c, c->w->cfg->keepalive_timeout);
    if (!h->in_parse) edge_h1_process_input(h);   /* pipelined requests, and the flush */
}

const edge_request_ops edge_h1_request_ops = {.respond = h1_respond};

