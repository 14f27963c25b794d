/* Access log lines, buffered per worker. */
#include "access_log.h"
#include "common.h"
#include "config.h"
#include "log.h"
#include "request.h"
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_BYTES 16384
#define FLUSH_SECONDS 1.0

static int log_fd = -1;          /* -1: off */
static int log_format;      /* EDGE_LOG_FORMAT_* */
static char log_path[4096];

int edge_access_log_open(const char *path, int format, char *err, size_t errlen)
{
    log_format = format;
    if (strcmp(path, "off") == 0) return EDGE_OK;
    if (strcmp(path, "-") == 0 || strcmp(path, "stdout") == 0) {
        log_fd = STDOUT_FILENO;
        return EDGE_OK;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open access log %s: %s", path, strerror(errno));
        return EDGE_ERROR;
    }
    snprintf(log_path, sizeof(log_path), "%s", path);
    log_fd = fd;
    return EDGE_OK;
}

void edge_access_log_reopen(void)
{
    if (log_fd < 0 || log_path[0] == '\0') return;
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        edge_log(EDGE_LOG_ERR, 0, "cannot reopen access log %s: %s", log_path, strerror(errno));
        return;
    }
    dup2(fd, log_fd);     /* atomic for the workers: they keep writing to the same number */
    close(fd);
}

void edge_access_log_close(void)
{
    if (log_fd > STDERR_FILENO) close(log_fd);
    log_fd = -1;
    log_path[0] = '\0';
}

void edge_access_log_flush(edge_worker *w)
{
    edge_buf *b = &w->access_buf;
    if (b->len && log_fd >= 0) {
        size_t off = 0;
        while (off < b->len) {
            ssize_t n = write(log_fd, b->base + off, b->len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;           /* a full disk must not stop serving */
            off += (size_t)n;
        }
    }
    edge_buf_reset(b, FLUSH_BYTES * 2);
}

static void on_flush_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_access_log_flush(t->data);
}

/* ---- formatting ---- */

/* Appends s, escaped for a quoted field: JSON rules, or nginx's \xHH. */
static void put_escaped(edge_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            edge_buf_append(b, esc, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            edge_buf_printf(b, log_format == EDGE_LOG_FORMAT_JSON ? "\\u%04x" : "\\x%02X", c);
        } else {
            edge_buf_append(b, (const char *)&c, 1);
        }
    }
}

static void put_span(edge_buf *b, const edge_request *req, edge_span s)
{
    if (s.off == EDGE_SPAN_NONE || s.len == 0) edge_buf_append(b, "-", 1);
    else put_escaped(b, edge_request_ptr(req, s), s.len);
}

static void put_header(edge_buf *b, const edge_request *req, const char *name, size_t n)
{
    const edge_header *h = edge_request_header(req, name, n);
    if (h) put_escaped(b, edge_request_ptr(req, h->value), h->value.len);
    else edge_buf_append(b, "-", 1);
}

static void format_addr(const edge_request *req, char *out, size_t n)
{
    edge_request_peer_ip(req, out, n);
    if (out[0] == '\0') snprintf(out, n, "-");
}

static size_t body_bytes(const edge_request *req)
{
    if (req->resp.status == 101) return req->resp.streamed;     /* a WebSocket's bytes relayed */
    return req->is_head || !edge_http_status_has_body(req->resp.status) ? 0
                                                                       : req->resp.body.len + req->resp.streamed;
}

static void put_target(edge_buf *b, const edge_request *req)
{
    put_span(b, req, req->path);
    if (req->query.off != EDGE_SPAN_NONE) {
        edge_buf_append(b, "?", 1);
        put_escaped(b, edge_request_ptr(req, req->query), req->query.len);
    }
}

static void put_time(edge_buf *b, double now, const char *format)
{
    char when[64];
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), format, &tm);
    edge_buf_append_str(b, when);
}

/* nginx's combined format; combined_id adds ` "request id" ` before the
 * request time that finish_line appends. */
static void put_combined(edge_buf *b, edge_request *req, const char *addr, double now)
{
    edge_buf_append_str(b, addr);
    edge_buf_append_str(b, " - - [");
    put_time(b, now, "%d/%b/%Y:%H:%M:%S +0000");
    edge_buf_append_str(b, "] \"");
    put_span(b, req, req->method);
    edge_buf_append(b, " ", 1);
    put_target(b, req);
    edge_buf_printf(b, " HTTP/%s\" %d %zu \"", req->version ? req->version : "1.1", req->resp.status, body_bytes(req));
    put_header(b, req, "referer", 7);
    edge_buf_append(b, "\" \"", 3);
    put_header(b, req, "user-agent", 10);
    edge_buf_append(b, "\"", 1);
    if (log_format == EDGE_LOG_FORMAT_COMBINED_ID) {
        edge_buf_append(b, " \"", 2);
        put_escaped(b, edge_request_id(req), strlen(edge_request_id(req)));
        edge_buf_append(b, "\" ", 2);
    }
}

static void put_json_field(edge_buf *b, const char *name, const char *value, size_t n)
{
    edge_buf_printf(b, ",\"%s\":\"", name);
    put_escaped(b, value, n);
    edge_buf_append(b, "\"", 1);
}

static void put_json_header(edge_buf *b, const edge_request *req, const char *field, const char *name, size_t n)
{
    const edge_header *h = edge_request_header(req, name, n);
    if (h) put_json_field(b, field, edge_request_ptr(req, h->value), h->value.len);
    else edge_buf_printf(b, ",\"%s\":null", field);
}

/* The request's last edge.fetch; nulls when it made none. */
static void put_json_upstream(edge_buf *b, const edge_request *req)
{
    const edge_upstream_note *u = &req->upstream;
    if (!u->used) {
        edge_buf_append_str(b, ",\"upstream_addr\":null,\"upstream_status\":null,\"upstream_response_time\":null");
        return;
    }
    if (u->addr[0]) put_json_field(b, "upstream_addr", u->addr, strlen(u->addr));
    else edge_buf_append_str(b, ",\"upstream_addr\":null");
    if (u->status) edge_buf_printf(b, ",\"upstream_status\":%d", u->status);
    else edge_buf_append_str(b, ",\"upstream_status\":null");
    edge_buf_printf(b, ",\"upstream_response_time\":%.3f", u->seconds);
}

/* One JSON object; "duration" is last, appended by finish_line. */
static void put_json(edge_buf *b, edge_request *req, const char *addr, double now)
{
    edge_buf_append_str(b, "{\"time\":\"");
    put_time(b, now, "%Y-%m-%dT%H:%M:%S");
    edge_buf_printf(b, ".%03dZ\"", (int)((now - (double)(time_t)now) * 1000));
    put_json_field(b, "id", edge_request_id(req), strlen(edge_request_id(req)));
    put_json_field(b, "remote_addr", addr, strlen(addr));
    if (req->host.off != EDGE_SPAN_NONE) put_json_field(b, "host", edge_request_ptr(req, req->host), req->host.len);
    else edge_buf_append_str(b, ",\"host\":null");
    edge_buf_printf(b, ",\"protocol\":\"HTTP/%s\"", req->version ? req->version : "1.1");
    if (req->tls_version) put_json_field(b, "tls_version", req->tls_version, strlen(req->tls_version));
    else edge_buf_append_str(b, ",\"tls_version\":null");
    edge_buf_append_str(b, ",\"method\":\"");
    put_span(b, req, req->method);
    edge_buf_append_str(b, "\",\"path\":\"");
    put_target(b, req);
    edge_buf_printf(b, "\",\"status\":%d,\"bytes\":%zu,\"bytes_received\":%llu", req->resp.status,
                    body_bytes(req), (unsigned long long)req->bytes_in);
    put_json_header(b, req, "referer", "referer", 7);
    put_json_header(b, req, "user_agent", "user-agent", 10);
    put_json_upstream(b, req);
    edge_buf_printf(b, ",\"cache\":\"%s\",\"duration\":", req->cache_status ? req->cache_status : "-");
}

/* Formats req's line up to (not including) its request time. */
static void format_line(edge_buf *b, edge_request *req, double now)
{
    char addr[64];
    format_addr(req, addr, sizeof(addr));
    if (log_format == EDGE_LOG_FORMAT_JSON) put_json(b, req, addr, now);
    else put_combined(b, req, addr, now);
}

/* Ends a line begun by format_line, with the request time in seconds. */
static void finish_line(edge_buf *b, double seconds)
{
    if (seconds < 0) seconds = 0;
    if (log_format == EDGE_LOG_FORMAT_JSON) edge_buf_printf(b, "%.6f}\n", seconds);
    else if (log_format == EDGE_LOG_FORMAT_COMBINED_ID) edge_buf_printf(b, "%.3f\n", seconds);
    else edge_buf_append(b, "\n", 1);
}

static void line_written(edge_worker *w)
{
    if (w->access_buf.len >= FLUSH_BYTES) {
        edge_access_log_flush(w);
    } else if (!ev_is_active(&w->access_timer)) {
        ev_timer_init(&w->access_timer, on_flush_timer, FLUSH_SECONDS, 0.);
        w->access_timer.data = w;
        ev_timer_start(w->loop, &w->access_timer);
    }
}

int edge_access_log_enabled(void)
{
    return log_fd >= 0;
}

void edge_access_log_format(edge_worker *w, edge_request *req, edge_buf *out)
{
    format_line(out, req, ev_now(w->loop));
}

void edge_access_log_commit(edge_worker *w, const char *line, size_t n, double seconds)
{
    if (log_fd < 0) return;
    edge_buf_append(&w->access_buf, line, n);
    finish_line(&w->access_buf, seconds);
    line_written(w);
}

void edge_access_log_request(edge_worker *w, edge_request *req)
{
    if (log_fd < 0) return;
    double now = ev_now(w->loop);
    format_line(&w->access_buf, req, now);
    finish_line(&w->access_buf, now - req->start);
    line_written(w);
}
