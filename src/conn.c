/* Client connections: TLS handshake, reading, writing, closing. */
#include "conn.h"
#include "common.h"
#include "h1.h"
#include "h2.h"
#include "log.h"
#include "tls.h"
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK     16384      /* one TLS record */
#define READS_PER_WAKE 8          /* fairness between connections */
#define IN_MAX         65536      /* unconsumed input held before reading pauses */
#define OUT_KEEP       4096       /* output buffer kept across responses */
#define LINGER_SECONDS 2.0

static void on_readable(struct ev_loop *loop, ev_io *w, int revents);
static void on_writable(struct ev_loop *loop, ev_io *w, int revents);
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void on_send_timeout(struct ev_loop *loop, ev_timer *w, int revents);

/* The TLS session for an accepted socket; NULL (logged) when OpenSSL cannot
 * make one, out of memory: the caller drops that connection, not the worker. */
static SSL *tls_new(edge_worker *w, int fd)
{
    SSL *ssl = SSL_new(w->ssl_ctx);
    if (ssl && SSL_set_fd(ssl, fd) == 1) {
        SSL_set_accept_state(ssl);
        return ssl;
    }
    char why[256];
    edge_tls_error_string(why, sizeof(why));
    edge_log(EDGE_LOG_ERR, 0, "cannot start TLS on an accepted connection (%s): closing it",
             why[0] ? why : "out of memory");
    SSL_free(ssl);     /* NULL-safe */
    return NULL;
}

void edge_conn_accept(edge_worker *w, int fd, const struct sockaddr_storage *peer, int plain)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    SSL *ssl = NULL;
    if (!plain && (ssl = tls_new(w, fd)) == NULL) {
        close(fd);
        return;
    }
    edge_conn *c = edge_calloc(1, sizeof(*c));
    c->w = w;
    c->id = edge_worker_next_conn_id();
    c->fd = fd;
    c->peer = *peer;
    c->state = EDGE_CONN_HANDSHAKE;
    c->ssl = ssl;
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    ev_init(&c->timer, on_timer);
    ev_init(&c->send_timer, on_send_timeout);
    c->send_timer.repeat = w->cfg->send_timeout;
    edge_worker_add_conn(w, c);
    ev_io_start(w->loop, &c->rio);
    edge_conn_set_timeout(c, w->cfg->handshake_timeout);
}

void edge_conn_set_timeout(edge_conn *c, double seconds)
{
    if (seconds <= 0) {
        ev_timer_stop(c->w->loop, &c->timer);
        return;
    }
    c->timer.repeat = seconds;
    ev_timer_again(c->w->loop, &c->timer);
}

/* ---- handshake ---- */

static void attach_protocol(edge_conn *c, int h2)
{
    c->state = EDGE_CONN_OPEN;
    c->proto_kind = h2 ? EDGE_PROTO_H2 : EDGE_PROTO_H1;
    edge_conn_set_timeout(c, 0);
    if (h2) edge_h2_attach(c);
    else edge_h1_attach(c);
    /* Counted once attached: a set-up that failed closed the connection with
     * c->proto NULL, and edge_conn_close uncounts only when c->proto is set. */
    if (c->proto) edge_counter_add(&c->w->counters.open_conns[c->proto_kind], 1);
}

static void read_input(edge_conn *c);

static void do_handshake(edge_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        EDGE_COUNT(c->w->counters.tls_handshakes);
        if (SSL_session_reused(c->ssl)) EDGE_COUNT(c->w->counters.tls_resumed);
        attach_protocol(c, strcmp(edge_tls_protocol(c->ssl), "h2") == 0);
        if (c->state == EDGE_CONN_OPEN) read_input(c);   /* the first request may have come along */
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        ev_io_stop(c->w->loop, &c->wio);
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        ev_io_start(c->w->loop, &c->wio);
        return;
    }
    char why[256];
    EDGE_COUNT(c->w->counters.tls_failures);
    edge_tls_error_string(why, sizeof(why));
    if (why[0]) edge_log(EDGE_LOG_INFO, c->id, "TLS handshake failed: %s", why);
    else if (err == SSL_ERROR_SYSCALL && errno) edge_log(EDGE_LOG_INFO, c->id, "TLS handshake failed: %s", strerror(errno));
    else edge_log(EDGE_LOG_DEBUG, c->id, "client closed the connection during the TLS handshake");
    edge_conn_close(c);
}

/* ---- reading ---- */

enum { RECV_EOF = -1, RECV_FAILED = -2 };

/* Reads into buf: > 0 bytes read, 0 nothing now, RECV_EOF the client finished
 * sending (FIN, or TLS close_notify), RECV_FAILED a reset or a TLS error. */
static int recv_some(edge_conn *c, char *buf, size_t n)
{
    if (c->ssl == NULL) {
        ssize_t r = read(c->fd, buf, n);
        if (r > 0) return (int)r;
        if (r == 0) return RECV_EOF;
        return errno == EAGAIN || errno == EINTR ? 0 : RECV_FAILED;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, (int)n);
    if (r > 0) return r;
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) return 0;
    if (err == SSL_ERROR_WANT_WRITE) {
        c->read_wants_write = 1;
        ev_io_start(c->w->loop, &c->wio);
        return 0;
    }
    /* close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a FIN without one:
     * either way the client may still read our answer. */
    return err == SSL_ERROR_ZERO_RETURN ? RECV_EOF : RECV_FAILED;
}

static int has_pending(edge_conn *c)
{
    return c->ssl && SSL_has_pending(c->ssl);
}

enum { FILL_OK, FILL_EOF, FILL_FAILED };

/* Reads what the socket and OpenSSL hold, up to IN_MAX unconsumed bytes.
 * Returns FILL_OK, or FILL_EOF / FILL_FAILED when the input ended (the bytes
 * read before the end are in c->in). */
static int fill_input(edge_conn *c)
{
    char *scratch = c->w->scratch;
    for (int i = 0; i < READS_PER_WAKE; i++) {
        if (c->in.len >= IN_MAX) {
            edge_conn_pause_read(c);
            return FILL_OK;
        }
        size_t room = IN_MAX - c->in.len < READ_CHUNK ? IN_MAX - c->in.len : READ_CHUNK;
        int n = recv_some(c, scratch, room);
        if (n == RECV_EOF) return FILL_EOF;
        if (n < 0) return FILL_FAILED;
        if (n == 0) return FILL_OK;
        c->read_since_trim = 1;
        c->trimmed = 0;
        edge_buf_append(&c->in, scratch, (size_t)n);
        /* A short read with nothing left inside OpenSSL means the socket is
         * most likely empty: skip the read that would say EAGAIN; the
         * level-triggered watcher wakes us if more arrived meanwhile. */
        if ((size_t)n < room && !has_pending(c)) return FILL_OK;
    }
    /* More may be decrypted inside OpenSSL, which the socket will not signal. */
    if (has_pending(c)) ev_feed_event(c->w->loop, &c->rio, EV_READ);
    return FILL_OK;
}

/* Hands the bytes fill_input read (new_bytes) to the protocol, then deals with
 * the end of the input: after a FIN or close_notify a protocol with on_eof
 * answers what it received completely (only a failed write cancels a
 * request); otherwise, or after a reset, the connection closes at once. */
static void deliver_input(edge_conn *c, int fill, int new_bytes)
{
    int half_close = fill == FILL_EOF && c->proto->on_eof;
    if (half_close) {
        c->read_eof = 1;
        edge_conn_pause_read(c);   /* a socket at EOF stays readable */
    }
    if (new_bytes) c->proto->on_data(c);
    if (fill == FILL_OK || c->state != EDGE_CONN_OPEN) return;
    if (half_close) {
        edge_log(EDGE_LOG_DEBUG, c->id, "client finished sending");
        c->proto->on_eof(c);
        return;
    }
    edge_log(EDGE_LOG_DEBUG, c->id, "client closed the connection");
    edge_conn_close(c);
}

/* Cleartext: the HTTP/2 connection preface picks HTTP/2 (prior knowledge),
 * anything else HTTP/1.1, decided as soon as the bytes differ or match. */
static void detect_protocol(edge_conn *c)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t want = sizeof(preface) - 1;
    int fill = fill_input(c);
    size_t n = c->in.len < want ? c->in.len : want;
    int h2 = n > 0 && memcmp(c->in.base, preface, n) == 0;
    int undecided = n == 0 || (h2 && n < want);   /* nothing yet, or a prefix of the preface */
    if (fill == FILL_FAILED || (fill == FILL_EOF && undecided)) {
        edge_conn_close(c);
        return;
    }
    if (undecided) return;
    attach_protocol(c, h2);
    if (c->state == EDGE_CONN_OPEN) deliver_input(c, fill, 1);
}

static void read_input(edge_conn *c)
{
    size_t before = c->in.len;
    int fill = fill_input(c);
    if (c->proto) deliver_input(c, fill, c->in.len > before);
    else if (fill != FILL_OK) edge_conn_close(c);
}

/* After the final response: discard what the client still sends, so closing
 * does not reset the connection before it read that response. */
static void linger_read(edge_conn *c)
{
    char *scratch = c->w->scratch;
    for (int i = 0; i < READS_PER_WAKE; i++) {
        ssize_t n = read(c->fd, scratch, READ_CHUNK);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        break;
    }
    edge_conn_close(c);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    edge_conn *c = edge_container_of(w, edge_conn, rio);
    switch (c->state) {
    case EDGE_CONN_HANDSHAKE:
        if (c->ssl) do_handshake(c);
        else detect_protocol(c);
        return;
    case EDGE_CONN_LINGER: linger_read(c); return;
    case EDGE_CONN_CLOSED: return;
    case EDGE_CONN_OPEN: break;
    }
    if (c->write_wants_read) {
        c->write_wants_read = 0;
        if (edge_conn_flush(c) == EDGE_DONE) return;
    }
    read_input(c);
}

void edge_conn_pause_read(edge_conn *c)
{
    c->read_paused = 1;
    ev_io_stop(c->w->loop, &c->rio);
}

void edge_conn_resume_read(edge_conn *c)
{
    if (!c->read_paused || c->read_eof || c->state != EDGE_CONN_OPEN) return;
    c->read_paused = 0;
    ev_io_start(c->w->loop, &c->rio);
    /* Bytes OpenSSL already decrypted will not wake the socket: go through the
     * loop once instead of reading from under the caller. */
    if (has_pending(c)) ev_feed_event(c->w->loop, &c->rio, EV_READ);
}

/* ---- writing ---- */

static void start_linger(edge_conn *c)
{
    if (c->ssl) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);          /* close_notify; we do not wait for the peer's */
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
    c->state = EDGE_CONN_LINGER;
    ev_io_stop(c->w->loop, &c->wio);
    ev_io_start(c->w->loop, &c->rio);
    c->read_paused = 0;
    edge_conn_set_timeout(c, LINGER_SECONDS);
}

/* Writes from buf: > 0 bytes written, 0 not now (a watcher is armed), -1 failed. */
static int send_some(edge_conn *c, const char *buf, size_t n)
{
    if (n > 1 << 30) n = 1 << 30;
    if (c->ssl == NULL) {
        ssize_t r = write(c->fd, buf, n);
        if (r > 0) return (int)r;
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            ev_io_start(c->w->loop, &c->wio);
            return 0;
        }
        return -1;
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, buf, (int)n);
    if (r > 0) return r;
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_WRITE) {
        ev_io_start(c->w->loop, &c->wio);
        return 0;
    }
    if (err == SSL_ERROR_WANT_READ) {
        c->write_wants_read = 1;
        return 0;
    }
    return -1;
}

static void notify_sent(edge_conn *c)
{
    if (c->proto && c->proto->on_sent) c->proto->on_sent(c);
}

int edge_conn_flush(edge_conn *c)
{
    if (c->state != EDGE_CONN_OPEN) return c->state == EDGE_CONN_CLOSED ? EDGE_DONE : EDGE_OK;
    size_t sent_before = c->out_sent;
    while (c->out_sent < c->out.len) {
        int n = send_some(c, c->out.base + c->out_sent, c->out.len - c->out_sent);
        if (n == 0) {
            /* Restarted on every write that made progress: the client has
             * --send-timeout between two of them, as nginx's send_timeout. */
            ev_timer_again(c->w->loop, &c->send_timer);
            if (c->out_sent > sent_before) notify_sent(c);
            return EDGE_AGAIN;
        }
        if (n < 0) {
            edge_log(EDGE_LOG_DEBUG, c->id, "write failed: client gone");
            edge_conn_close(c);
            return EDGE_DONE;
        }
        c->out_sent += (size_t)n;
    }
    int progress = c->out_sent > sent_before;
    c->trimmed = 0;                      /* a write may have refilled buffers: the next sweep looks */
    c->out_flushed += c->out.len;
    c->out_sent = 0;
    edge_buf_reset(&c->out, OUT_KEEP);
    if (progress) notify_sent(c);
    ev_timer_stop(c->w->loop, &c->send_timer);
    ev_io_stop(c->w->loop, &c->wio);
    if (c->close_when_flushed) {
        start_linger(c);
        return EDGE_DONE;
    }
    return EDGE_OK;
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    edge_conn *c = edge_container_of(w, edge_conn, wio);
    if (c->state == EDGE_CONN_HANDSHAKE) {
        if (c->ssl) do_handshake(c);
        return;
    }
    if (c->read_wants_write) {
        c->read_wants_write = 0;
        ev_io_stop(loop, &c->wio);
        read_input(c);
        if (c->state != EDGE_CONN_OPEN) return;
    }
    if (edge_conn_pending(c) == 0) {     /* woken to produce more (HTTP/2) */
        ev_io_stop(loop, &c->wio);
        if (c->proto && c->proto->on_drained) c->proto->on_drained(c);
        return;
    }
    if (edge_conn_flush(c) == EDGE_OK && c->proto && c->proto->on_drained) c->proto->on_drained(c);
}

/* ---- timer and closing ---- */

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    edge_conn *c = edge_container_of(w, edge_conn, timer);
    ev_timer_stop(loop, w);
    if (c->state == EDGE_CONN_HANDSHAKE) {
        if (c->ssl) EDGE_COUNT(c->w->counters.tls_failures);
        edge_log(EDGE_LOG_INFO, c->id, c->ssl ? "TLS handshake timed out" : "no request before the timeout");
        edge_conn_close(c);
    } else if (c->state == EDGE_CONN_LINGER) {
        edge_conn_close(c);
    } else if (c->state == EDGE_CONN_OPEN && c->proto && c->proto->on_timeout) {
        c->proto->on_timeout(c);
    }
}

static void on_send_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    edge_conn *c = edge_container_of(w, edge_conn, send_timer);
    edge_log(EDGE_LOG_INFO, c->id, "client stopped reading for %.0fs: closing", w->repeat);
    edge_conn_close(c);
}

void edge_conn_close_after_flush(edge_conn *c)
{
    if (c->state != EDGE_CONN_OPEN) return;
    c->close_when_flushed = 1;
    edge_conn_pause_read(c);
    edge_conn_flush(c);
}

void edge_conn_close(edge_conn *c)
{
    if (c->state == EDGE_CONN_CLOSED) return;
    if (c->proto) edge_counter_add(&c->w->counters.open_conns[c->proto_kind], -1);
    c->state = EDGE_CONN_CLOSED;
    if (c->proto && c->proto->on_close) c->proto->on_close(c);
    struct ev_loop *loop = c->w->loop;
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    ev_timer_stop(loop, &c->timer);
    ev_timer_stop(loop, &c->send_timer);
    close(c->fd);
    c->fd = -1;
    edge_worker_retire_conn(c->w, c);
}

/* OpenSSL's record buffers (16 KiB each way) follow the connection's pace. A
 * connection starts in SSL_MODE_RELEASE_BUFFERS (the server context's mode):
 * the buffers are freed as soon as they are empty, so a connection that makes
 * one request and idles never holds them, and their memory is reused at once
 * by the next connection (no fragments left between long-lived objects). One
 * that was busy since the last sweep keeps them (the mode cleared): freeing
 * and reallocating both on every request cost 5 % of the HTTP/1.1 hot path.
 * Once it is idle again it goes back to releasing, and gives them back now. */
static void keep_tls_buffers(edge_conn *c, int keep)
{
    if (c->ssl == NULL || c->tls_keeps_buffers == keep) return;
    c->tls_keeps_buffers = keep;
    if (keep) {
        SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
        return;
    }
    SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    /* Never with bytes inside OpenSSL (OpenSSL before 3.0.14 freed a partly
     * read record: CVE-2024-4741); a pending record is released when read. */
    if (!SSL_has_pending(c->ssl)) SSL_free_buffers(c->ssl);
}

void edge_conn_trim(edge_conn *c)
{
    if (c->read_since_trim) {
        c->read_since_trim = 0;
        keep_tls_buffers(c, 1);
        return;
    }
    if (c->state != EDGE_CONN_OPEN || c->proto == NULL || c->trimmed || c->in.len || c->out.len) return;
    if (c->proto->trim && !c->proto->trim(c)) return;
    c->trimmed = 1;
    edge_buf_free(&c->in);
    edge_buf_free(&c->out);
    keep_tls_buffers(c, 0);
}

void edge_conn_free(edge_conn *c)
{
    if (c->proto && c->proto->free) c->proto->free(c);
    if (c->ssl) SSL_free(c->ssl);
    edge_buf_free(&c->in);
    edge_buf_free(&c->out);
    free(c);
}
