/* A client connection to an origin: connect, TLS, one request, one response. */
#include "upstream_conn.h"
#include "body_pipe.h"
#include "common.h"
#include "listener.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define READ_CHUNK 65536   /* one recv per 64 KiB of a streamed body */

static void on_io(struct ev_loop *loop, ev_io *w, int revents);
static void on_idle_io(edge_upconn *c);
static void on_timer(struct ev_loop *loop, ev_timer *t, int revents);
static const llhttp_settings_t *parser_settings(void);

/* ---- set-up ---- */

static int start_tls(edge_upconn *c, const edge_upconn_tls *tls, char *err, size_t errlen)
{
    c->ssl = SSL_new(tls->ctx);
    if (c->ssl == NULL) {
        snprintf(err, errlen, "cannot create a TLS connection to %s", c->peer);
        return EDGE_ERROR;
    }
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_connect_state(c->ssl);
    if (tls->sni) SSL_set_tlsext_host_name(c->ssl, tls->sni);
    if (tls->verify_name) {
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
        SSL_set1_host(c->ssl, tls->verify_name);   /* an IP literal is matched against IP SANs */
    } else {
        SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    }
    if (tls->session) SSL_set_session(c->ssl, tls->session);
    return EDGE_OK;
}

edge_upconn *edge_upconn_open(struct ev_loop *loop, const struct sockaddr_storage *addr,
                              const edge_upconn_tls *tls, char *err, size_t errlen)
{
    edge_upconn *c = edge_calloc(1, sizeof(*c));
    c->loop = loop;
    c->born = ev_now(loop);
    c->state = UC_CONNECTING;
    edge_sockaddr_format(addr, c->peer, sizeof(c->peer));
    ev_init(&c->timer, on_timer);
    c->fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(err, errlen, "cannot open a socket to %s: %s", c->peer, strerror(errno));
        edge_upconn_free(c);
        return NULL;
    }
    /* The fd is set once: later changes of events only (ev_io_modify) let
     * libev skip epoll_ctl when the events stay the same. */
    ev_io_init(&c->io, on_io, c->fd, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    socklen_t len = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    /* A failure at once (refused on loopback) is kept and reported from the
     * loop by the exchange, like one that SO_ERROR tells later. */
    if (connect(c->fd, (const struct sockaddr *)addr, len) < 0 && errno != EINPROGRESS)
        c->connect_errno = errno;
    if (tls->ctx && start_tls(c, tls, err, errlen) != EDGE_OK) {
        edge_upconn_free(c);
        return NULL;
    }
    return c;
}

/* ---- finishing an exchange ---- */

static void stop_watchers(edge_upconn *c)
{
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
}

/* Ends the exchange with result; the callback may free c. The timer stays:
 * the callback parks c (which sets the idle deadline) or frees it. */
static void detach_body(edge_upconn *c);

static void finish(edge_upconn *c, int result)
{
    ev_io_stop(c->loop, &c->io);
    detach_body(c);
    c->state = UC_DONE;
    c->clean = result == EDGE_UPCONN_DONE;
    if (result == EDGE_UPCONN_DONE) c->reusable = c->reusable && llhttp_should_keep_alive(&c->parser);
    else c->reusable = 0;
    edge_upconn_cb cb = c->cb;
    c->cb = NULL;
    cb(c, result, c->err, c->ud);
}

static void fail(edge_upconn *c, int result, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(edge_upconn *c, int result, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    finish(c, result);
}

/* A reused connection that broke before any response byte: the origin
 * closed it while idle. The caller may retry on a fresh one. */
static void fail_io(edge_upconn *c, const char *what, int e)
{
    if (c->reused && !c->got_bytes) {
        fail(c, EDGE_UPCONN_STALE, "%s %s: %s (a kept-alive connection the origin had closed)", what,
             c->peer, e ? strerror(e) : "connection closed");
        return;
    }
    fail(c, EDGE_UPCONN_FAILED, "%s %s: %s", what, c->peer, e ? strerror(e) : "connection closed");
}

/* The timeout is a deadline, checked lazily (libev's "let the timer run"
 * idiom): activity only moves c->deadline, and the timer is touched only when
 * it would otherwise fire after the new deadline. When it fires early,
 * on_timer sets it for what remains. A kept-alive exchange thus costs no
 * timer heap operation at all when its timeouts are not shorter than the
 * idle timeout. */
static void set_deadline(edge_upconn *c, double timeout)
{
    c->deadline = ev_now(c->loop) + timeout;
    if (ev_is_active(&c->timer) && ev_timer_remaining(c->loop, &c->timer) <= timeout) return;
    c->timer_for = c->deadline;
    c->timer.repeat = timeout;
    ev_timer_again(c->loop, &c->timer);
}

/* Watches the fd for events (restarting the watcher only when they change)
 * and, when timeout >= 0, sets the deadline. */
static void arm(edge_upconn *c, int events, double timeout)
{
    if (!ev_is_active(&c->io) || (c->io.events & (EV_READ | EV_WRITE)) != events) {
        ev_io_stop(c->loop, &c->io);
        ev_io_modify(&c->io, events);
        ev_io_start(c->loop, &c->io);
    }
    if (timeout >= 0) set_deadline(c, timeout);
}

/* ---- connect and handshake ---- */

static void connect_failed(edge_upconn *c, int e)
{
    if (e == ECONNREFUSED) fail(c, EDGE_UPCONN_CONNECT_FAILED, "connect refused: %s", c->peer);
    else fail(c, EDGE_UPCONN_CONNECT_FAILED, "connect to %s failed: %s", c->peer, strerror(e));
}

static void tls_failed(edge_upconn *c)
{
    long v = SSL_get_verify_result(c->ssl);
    char why[256];
    if (v != X509_V_OK && SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE)
        fail(c, EDGE_UPCONN_CONNECT_FAILED, "TLS certificate of %s not trusted: %s (tls.ca_file names "
             "a private CA; tls.sni the name to check)", c->peer, X509_verify_cert_error_string(v));
    else
        fail(c, EDGE_UPCONN_CONNECT_FAILED, "TLS handshake with %s failed: %s", c->peer,
             edge_tls_error_string(why, sizeof(why))[0] ? why : "connection closed");
}

static void start_sending(edge_upconn *c);

static void step_handshake(edge_upconn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        start_sending(c);
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) arm(c, EV_READ, -1);
    else if (e == SSL_ERROR_WANT_WRITE) arm(c, EV_WRITE, -1);
    else tls_failed(c);
}

static void step_connect(edge_upconn *c)
{
    int e = c->connect_errno;
    socklen_t len = sizeof(e);
    if (e == 0 && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0) e = errno;
    if (e == EINPROGRESS) return;
    if (e) {
        connect_failed(c, e);
        return;
    }
    if (c->ssl) {
        c->state = UC_HANDSHAKE;
        step_handshake(c);
    } else {
        start_sending(c);
    }
}

/* ---- sending ---- */

static void start_reading(edge_upconn *c);

static void start_sending(edge_upconn *c)
{
    c->state = UC_SENDING;
    arm(c, EV_WRITE, c->to.send);
}

/* Writes what it can: >0 bytes written, 0 would block, -1 failed (errno). */
static ssize_t write_some(edge_upconn *c, const char *p, size_t n)
{
    if (c->ssl == NULL) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        return w;
    }
    ERR_clear_error();
    int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (w > 0) return w;
    int e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) return 0;
    errno = e == SSL_ERROR_SYSCALL && errno ? errno : EPIPE;
    return -1;
}

/* ---- a request body from a pipe ---- */

static void detach_body(edge_upconn *c)
{
    if (c->body == NULL) return;
    edge_pipe_consumer none = {0};
    edge_pipe_set_consumer(c->body, &none);
    c->body = NULL;
}

/* The pipe has bytes, or ended: back to sending, from the loop (this runs
 * inside the client's producer). */
static void on_body_ready(void *ud)
{
    edge_upconn *c = ud;
    if (!c->body_waiting) return;
    c->body_waiting = 0;
    arm(c, EV_WRITE, c->to.send);
}

/* Writes what it can of p[0..n): 1 all of it, 0 would block, -1 failed (reported). */
static int write_all(edge_upconn *c, const char *p, size_t n, size_t *done)
{
    while (*done < n) {
        ssize_t w = write_some(c, p + *done, n - *done);
        if (w < 0) {
            fail_io(c, "send to", errno);
            return -1;
        }
        if (w == 0) {
            arm(c, EV_WRITE, -1);           /* the timer restarts on progress only */
            return 0;
        }
        *done += (size_t)w;
        set_deadline(c, c->to.send);
    }
    return 1;
}

/* Picks the next piece to send: a chunk of what the pipe holds, the last
 * chunk, or nothing yet. Returns 1 to go on writing, 0 to stop (waiting,
 * done: the response is read, or failed: reported). */
static int next_body_piece(edge_upconn *c)
{
    edge_pipe *p = c->body;
    if (edge_pipe_failed(p)) {
        fail(c, EDGE_UPCONN_FAILED, "the client's request body ended early (%s)", c->label);
        return 0;
    }
    size_t n = edge_pipe_readable(p);
    if (!c->body_chunked && n > c->body_left) n = (size_t)c->body_left;
    if (n > 0) {
        c->chunk_left = n;
        if (c->body_chunked) {
            c->frame.len = c->frame_off = 0;
            edge_buf_printf(&c->frame, "%zx\r\n", n);
        }
        return 1;
    }
    int ended = c->body_chunked ? edge_pipe_done(p) : c->body_left == 0;
    if (ended && c->body_chunked && !c->body_last) {
        c->body_last = 1;
        c->frame.len = c->frame_off = 0;
        edge_buf_append(&c->frame, "0\r\n\r\n", 5);
        return 1;
    }
    if (ended) {                        /* all sent: the body's owner may close the pipe now */
        detach_body(c);
        start_reading(c);
        return 0;
    }
    c->body_waiting = 1;                /* empty: the client's pace, not the origin's */
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    return 0;
}

static void send_body(edge_upconn *c)
{
    for (;;) {
        if (c->frame_off < c->frame.len) {
            int rc = write_all(c, c->frame.base, c->frame.len, &c->frame_off);
            if (rc <= 0) return;
        }
        if (c->chunk_left > 0) {
            size_t done = 0;
            int rc = write_all(c, edge_pipe_data(c->body), c->chunk_left, &done);
            if (done) {
                c->chunk_left -= done;
                if (!c->body_chunked) c->body_left -= done;
                edge_pipe_consume(c->body, done);     /* may resume the client's read (from the loop) */
            }
            if (rc <= 0) return;
            if (c->body_chunked) {
                c->frame.len = c->frame_off = 0;
                edge_buf_append(&c->frame, "\r\n", 2);
            }
            continue;
        }
        if (!next_body_piece(c)) return;
    }
}

static void step_send(edge_upconn *c)
{
    if (c->send_errno) {                /* the first write, made from edge_upconn_exchange, failed */
        fail_io(c, "send to", c->send_errno);
        return;
    }
    if (write_all(c, c->out, c->out_len, &c->out_off) <= 0) return;
    if (c->body) send_body(c);
    else start_reading(c);
}

/* ---- reading ---- */

static void start_reading(edge_upconn *c)
{
    c->state = UC_READING;
    arm(c, EV_READ, c->to.read);
}

/* Reads what it can: >0 bytes, 0 EOF, -1 failed (errno), -2 would block. */
static ssize_t read_some(edge_upconn *c, char *buf, size_t n)
{
    if (c->ssl == NULL) {
        ssize_t r = recv(c->fd, buf, n, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return -2;
        return r;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -2;
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) return 0;
    if (e != SSL_ERROR_SYSCALL) errno = EPROTO;
    return -1;
}

static void parse_failed(edge_upconn *c)
{
    if (c->err[0] == '\0')
        snprintf(c->err, sizeof(c->err), "malformed response from %s: %s", c->peer,
                 llhttp_get_error_reason(&c->parser));
    finish(c, EDGE_UPCONN_FAILED);
}

/* The pipe is full and the parser paused: the bytes after the pause wait in
 * c->pending, and nothing is read until edge_upconn_resume. */
static void stash_rest(edge_upconn *c, const char *p, size_t n)
{
    const char *pos = llhttp_get_error_pos(&c->parser);
    size_t rest = (size_t)(p + n - pos);
    llhttp_resume(&c->parser);
    if (p == c->pending.base) {
        edge_buf_consume(&c->pending, n - rest);
    } else {
        edge_buf_append(&c->pending, pos, rest);
    }
    stop_watchers(c);
}

/* WebSocket: the bytes after the 101 head are the tunnel's; they wait in
 * c->pending for tunnel.c. */
static void keep_tunnel_bytes(edge_upconn *c, const char *p, size_t n)
{
    size_t rest = (size_t)(p + n - llhttp_get_error_pos(&c->parser));
    if (p == c->pending.base) edge_buf_consume(&c->pending, n - rest);
    else edge_buf_append(&c->pending, p + n - rest, rest);
}

/* Feeds bytes to llhttp; returns 1 when the exchange ended (c may be gone)
 * or streaming paused it. */
static int feed(edge_upconn *c, const char *p, size_t n)
{
    c->got_bytes = 1;
    llhttp_errno_t rc = llhttp_execute(&c->parser, p, n);
    if (rc == HPE_PAUSED_UPGRADE && c->upgraded) {
        keep_tunnel_bytes(c, p, n);
        finish(c, EDGE_UPCONN_DONE);
        return 1;
    }
    if (rc == HPE_OK) {
        if (p == c->pending.base) c->pending.len = 0;
        return 0;
    }
    if (rc == HPE_PAUSED && c->complete) {
        /* Bytes after the response: the framing is not what we think it is. */
        c->reusable = llhttp_get_error_pos(&c->parser) == p + n;
        if (p == c->pending.base) c->pending.len = 0;
        finish(c, EDGE_UPCONN_DONE);
        return 1;
    }
    if (rc == HPE_PAUSED && c->read_paused) {
        stash_rest(c, p, n);
        return 1;
    }
    if (c->pipe_gone) {
        snprintf(c->err, sizeof(c->err), "the client went away");
        finish(c, EDGE_UPCONN_FAILED);
        return 1;
    }
    parse_failed(c);
    return 1;
}

static void on_eof(edge_upconn *c)
{
    if (!c->got_bytes) {
        fail_io(c, "read from", 0);
        return;
    }
    llhttp_errno_t rc = llhttp_finish(&c->parser);
    if ((rc == HPE_OK || rc == HPE_PAUSED) && c->complete) {   /* close-delimited body */
        c->reusable = 0;
        finish(c, EDGE_UPCONN_DONE);
        return;
    }
    if (c->err[0] == '\0')
        snprintf(c->err, sizeof(c->err), "%s closed the connection before the response was complete",
                 c->peer);
    finish(c, EDGE_UPCONN_FAILED);
}

static void step_read(edge_upconn *c)
{
    if (c->resumed) {
        /* After a pause the parser may owe a callback even with no byte left
         * (the pipe filled on the body's last byte: message complete is due),
         * so it runs once, on the bytes kept, if any. */
        c->resumed = 0;
        edge_buf_reserve(&c->pending, 1);
        if (feed(c, c->pending.base, c->pending.len)) return;
    }
    char buf[READ_CHUNK];
    for (int i = 0; i < 16; i++) {      /* fair to other connections on this loop */
        ssize_t r = read_some(c, buf, sizeof(buf));
        if (r == -2) break;
        if (r == 0) {
            on_eof(c);
            return;
        }
        if (r < 0) {
            fail_io(c, "read from", errno);
            return;
        }
        if (feed(c, buf, (size_t)r)) return;
        set_deadline(c, c->to.read);        /* progress, and more to come */
    }
    /* Stopped for fairness: bytes OpenSSL already holds raise no fd event. */
    if (c->ssl && SSL_pending(c->ssl) > 0) ev_feed_event(c->loop, &c->io, EV_READ);
}

/* ---- the exchange ---- */

/* The scratch buffers for header names and values stay (small) from one
 * exchange to the next: no allocation per request on a kept-alive connection. */
static void reset_exchange(edge_upconn *c)
{
    edge_buf_reset(&c->resp.data, 16384);   /* lent buffers (edge_pools_lend_response) stay */
    edge_buf_reset(&c->resp.body, 65536);
    c->resp.n_headers = 0;
    c->resp.status = 0;
    edge_buf_reset(&c->hname, 1024);
    edge_buf_reset(&c->hvalue, 4096);
    c->header_bytes = 0;
    c->header_fields = 0;
    c->got_bytes = c->complete = c->reusable = c->in_value = c->clean = 0;
    c->head_cb = NULL;
    c->pipe = NULL;
    c->read_paused = c->pipe_gone = c->upgrade_ok = c->upgraded = c->resumed = 0;
    c->pending.len = 0;
    c->err[0] = '\0';
}

/* A kept-alive connection writes the request at once: the socket is almost
 * always writable, and waiting for EV_WRITE costs a loop turn and two
 * epoll_ctl. Whatever happens, the callback still runs from the loop. */
static void send_now(edge_upconn *c)
{
    c->state = UC_SENDING;
    ssize_t w = write_some(c, c->out, c->out_len);
    if (w < 0) {
        c->send_errno = errno ? errno : EPIPE;
        arm(c, EV_WRITE, c->to.send);
        ev_feed_event(c->loop, &c->io, EV_WRITE);  /* step_send reports it */
        return;
    }
    c->out_off = (size_t)w;
    if (c->out_off == c->out_len && c->body == NULL) start_reading(c);
    else arm(c, EV_WRITE, c->to.send);
}

/* Set before the exchange starts (an idle connection writes at once). */
static void reset_body(edge_upconn *c, struct edge_pipe *body, int chunked)
{
    c->body = body;
    c->frame.len = c->frame_off = 0;
    c->chunk_left = 0;
    c->body_chunked = chunked ? 1 : 0;
    c->body_last = c->body_waiting = 0;
    c->body_left = body && body->length > 0 ? (uint64_t)body->length : 0;
    if (body) {
        edge_pipe_consumer consumer = {.ready = on_body_ready, .ud = c};
        edge_pipe_set_consumer(body, &consumer);
    }
}

void edge_upconn_exchange(edge_upconn *c, const char *wire, size_t n, const edge_fetch_timeouts *to,
                          size_t max_body, int is_head, const char *label, edge_upconn_cb cb, void *ud)
{
    reset_exchange(c);
    c->out = wire;
    c->out_len = n;
    c->out_off = 0;
    c->send_errno = 0;
    c->to = *to;
    c->max_body = max_body;
    c->is_head = is_head;
    c->label = label;
    c->cb = cb;
    c->ud = ud;
    c->reused = c->nreq > 0;
    c->nreq++;
    llhttp_init(&c->parser, HTTP_RESPONSE, parser_settings());
    c->parser.data = c;
    if (c->state == UC_CONNECTING) {
        arm(c, EV_WRITE, to->connect);     /* writable: connected, or SO_ERROR says why not */
        if (c->connect_errno) ev_feed_event(c->loop, &c->io, EV_WRITE);   /* failed already */
    } else {
        send_now(c);
    }
}

void edge_upconn_exchange_stream(edge_upconn *c, const char *wire, size_t n, const edge_fetch_timeouts *to,
                                 int is_head, const char *label, edge_upconn_head_cb head_cb,
                                 struct edge_pipe *body, int body_chunked, edge_upconn_cb cb, void *ud)
{
    reset_body(c, body, body_chunked);
    edge_upconn_exchange(c, wire, n, to, SIZE_MAX, is_head, label, cb, ud);
    c->head_cb = head_cb;
}

void edge_upconn_resume(edge_upconn *c)
{
    if (!c->read_paused) return;
    c->read_paused = 0;
    c->resumed = 1;
    arm(c, EV_READ, c->to.read);
    ev_feed_event(c->loop, &c->io, EV_READ);    /* pending bytes, and what OpenSSL holds */
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    edge_upconn *c = edge_container_of(w, edge_upconn, io);
    switch (c->state) {
    case UC_CONNECTING: step_connect(c); break;
    case UC_HANDSHAKE:  step_handshake(c); break;
    case UC_SENDING:    step_send(c); break;
    case UC_READING:    step_read(c); break;
    case UC_IDLE:       on_idle_io(c); break;
    case UC_DONE:       stop_watchers(c); break;
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_upconn *c = edge_container_of(t, edge_upconn, timer);
    if (c->state == UC_DONE) {
        ev_timer_stop(loop, t);
        return;
    }
    /* Fired for an older deadline: wait for the current one. Even when that
     * one has passed too, it gets its own firing (a loop turn later), as a
     * timer set at that deadline would have fired after any other due timer
     * set earlier (a health check's own deadline, for one). */
    if (c->deadline != c->timer_for) {
        double left = c->deadline - ev_now(loop);
        c->timer_for = c->deadline;
        t->repeat = left > 1e-6 ? left : 1e-6;
        ev_timer_again(loop, t);
        return;
    }
    if (c->state == UC_IDLE) {
        stop_watchers(c);
        c->idle_cb(c, c->idle_ud);
    } else if (c->state == UC_CONNECTING || c->state == UC_HANDSHAKE)
        fail(c, EDGE_UPCONN_CONNECT_FAILED, "connect timeout after %g s: %s", c->to.connect, c->peer);
    else if (c->state == UC_SENDING)
        fail(c, EDGE_UPCONN_TIMEOUT, "send timeout after %g s: %s", c->to.send, c->label);
    else if (c->state == UC_READING)
        fail(c, EDGE_UPCONN_TIMEOUT, "read timeout after %g s: %s", c->to.read, c->label);
}

int edge_upconn_reusable(const edge_upconn *c)
{
    return c->reusable;
}

/* ---- idle in a pool ---- */

/* Readable while idle: EOF, an error or bytes nobody asked for all end the
 * connection. A TLS 1.3 session ticket arriving late is read and kept. */
static void on_idle_io(edge_upconn *c)
{
    char b[512];
    ssize_t r = read_some(c, b, sizeof(b));
    if (r == -2) return;
    stop_watchers(c);
    c->idle_cb(c, c->idle_ud);
}

/* The read watcher stays as it was (EV_READ after a response): parking costs
 * no epoll_ctl; on_io and on_timer dispatch on UC_IDLE. */
void edge_upconn_park(edge_upconn *c, double idle_timeout, edge_upconn_idle_cb cb, void *ud)
{
    c->state = UC_IDLE;
    c->idle_cb = cb;
    c->idle_ud = ud;
    c->out = NULL;
    c->out_len = c->out_off = 0;
    arm(c, EV_READ, idle_timeout);
}

/* tunnel.c's: the same primitives as the exchange's. */
ssize_t edge_upconn_read(edge_upconn *c, char *buf, size_t n)
{
    return read_some(c, buf, n);
}

ssize_t edge_upconn_write(edge_upconn *c, const char *p, size_t n)
{
    return write_some(c, p, n);
}

SSL_SESSION *edge_upconn_session(edge_upconn *c)
{
    if (c->ssl == NULL) return NULL;
    SSL_SESSION *s = SSL_get1_session(c->ssl);
    if (s && !SSL_SESSION_is_resumable(s)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return s;
}

void edge_upconn_free(edge_upconn *c)
{
    if (c == NULL) return;
    stop_watchers(c);
    detach_body(c);
    edge_buf_free(&c->frame);
    /* After a complete exchange, close_notify: OpenSSL would otherwise mark
     * the session (which the pool keeps for resumption) not resumable. A
     * connection that failed midway does not vouch for its session. */
    if (c->ssl && c->clean) SSL_shutdown(c->ssl);
    if (c->ssl) SSL_free(c->ssl);
    if (c->fd >= 0) close(c->fd);
    edge_buf_free(&c->resp.data);
    edge_buf_free(&c->resp.body);
    free(c->resp.headers);
    edge_buf_free(&c->hname);
    edge_buf_free(&c->hvalue);
    edge_buf_free(&c->pending);
    free(c);
}

/* ---- llhttp callbacks ---- */

static int header_limit(edge_upconn *c, size_t more)
{
    c->header_bytes += more;
    if (c->header_bytes <= EDGE_UPSTREAM_HEADER_BYTES) return 0;
    snprintf(c->err, sizeof(c->err), "malformed response from %s: headers larger than %d bytes", c->peer,
             EDGE_UPSTREAM_HEADER_BYTES);
    return -1;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    return header_limit(p->data, n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    edge_upconn *c = p->data;
    if (header_limit(c, n)) return -1;
    edge_buf_append(&c->hname, at, n);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    edge_upconn *c = p->data;
    if (header_limit(c, n)) return -1;
    edge_buf_append(&c->hvalue, at, n);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    edge_upconn *c = p->data;
    if (++c->header_fields > EDGE_UPSTREAM_HEADER_FIELDS) {
        snprintf(c->err, sizeof(c->err), "malformed response from %s: more than %d header fields",
                 c->peer, EDGE_UPSTREAM_HEADER_FIELDS);
        return -1;
    }
    for (size_t i = 0; i < c->hname.len; i++)
        c->hname.base[i] = (char)(c->hname.base[i] >= 'A' && c->hname.base[i] <= 'Z'
                                  ? c->hname.base[i] + 32 : c->hname.base[i]);
    edge_response_add_header(&c->resp, c->hname.base ? c->hname.base : "", c->hname.len,
                             c->hvalue.base ? c->hvalue.base : "", c->hvalue.len);
    c->hname.len = c->hvalue.len = 0;
    return 0;
}

/* 1 tells llhttp the response has no body (HEAD). A 1xx is dropped whole:
 * its headers go, and llhttp parses the next response. */
static int on_headers_complete(llhttp_t *p)
{
    edge_upconn *c = p->data;
    int status = p->status_code;
    if (status == 101 && c->upgrade_ok) {
        /* WebSocket: the head ends the exchange (2: llhttp stops after it
         * with HPE_PAUSED_UPGRADE); what follows is tunnel.c's. */
        c->upgraded = 1;
        c->resp.status = status;
        if (c->head_cb) c->head_cb(c, c->ud);
        return 2;
    }
    if (status == 101) {
        snprintf(c->err, sizeof(c->err), "malformed response from %s: 101 Switching Protocols to a "
                 "request that asked for no upgrade", c->peer);
        return -1;
    }
    if (status >= 100 && status < 200) return 0;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->max_body && !c->is_head &&
        edge_http_status_has_body(status)) {
        snprintf(c->err, sizeof(c->err), "response body larger than max_body (%zu)", c->max_body);
        return -1;
    }
    c->resp.status = status;
    if (c->head_cb) c->head_cb(c, c->ud);      /* streaming: it sets c->pipe */
    return c->is_head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    edge_upconn *c = p->data;
    if (c->head_cb) {
        if (c->pipe == NULL) return 0;              /* nobody reads it: dropped */
        int rc = edge_pipe_write(c->pipe, at, n);
        if (rc == EDGE_PIPE_GO_ON) return 0;
        if (rc == EDGE_PIPE_GONE) {
            c->pipe = NULL;
            c->pipe_gone = 1;
            return -1;
        }
        c->read_paused = 1;
        return HPE_PAUSED;
    }
    if (c->resp.body.len + n > c->max_body) {
        snprintf(c->err, sizeof(c->err), "response body larger than max_body (%zu)", c->max_body);
        return -1;
    }
    edge_buf_append(&c->resp.body, at, n);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    edge_upconn *c = p->data;
    int status = p->status_code;
    if (c->upgraded) return 0;     /* the 101's head stays: llhttp stops next (feed) */
    if (status >= 100 && status < 200) {
        c->resp.n_headers = 0;
        c->resp.data.len = 0;
        c->header_bytes = 0;
        c->header_fields = 0;
        return 0;
    }
    c->complete = 1;
    c->reusable = 1;
    return HPE_PAUSED;      /* stop here: what follows, if anything, is not ours */
}

static const llhttp_settings_t settings = {
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const llhttp_settings_t *parser_settings(void)
{
    return &settings;
}
