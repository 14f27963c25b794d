/* The byte tunnel after a 101 Switching Protocols (WebSocket): see tunnel.h.
 *
 * Client side: conn.c reads into c->in and calls on_data; we write to the
 * client by appending to c->out and flushing, as any protocol does.
 * Origin side: our own watchers on the origin connection's fd, and its
 * read/write primitives (edge_upconn_read / edge_upconn_write). */
#include "tunnel.h"
#include "access_log.h"
#include "body_pipe.h"
#include "common.h"
#include "conn.h"
#include "log.h"
#include "request.h"
#include "upstream_conn.h"
#include "worker.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK     16384
#define READS_PER_WAKE 16       /* fairness to other connections on the loop */

typedef struct edge_tunnel {
    edge_conn   *c;
    edge_upconn *u;                 /* NULL once the origin side was closed */
    struct ev_loop *loop;
    ev_io        up_rio, up_wio;    /* the origin's fd */
    double       idle_timeout;
    const edge_proto *prev_proto;   /* HTTP/1.1's, freed with the connection */
    void        *prev_data;
    edge_request *log_req;
    uint64_t     bytes_up;          /* client to origin */
    uint64_t     bytes_down;        /* origin to client */
    unsigned     up_paused : 1;         /* origin reading stopped: the client is behind */
    unsigned     client_done : 1;       /* the client finished sending */
    unsigned     write_blocked : 1;     /* the origin did not take all of c->in */
    unsigned     read_wants_write : 1;  /* an origin TLS read waits for writability */
} edge_tunnel;

static const edge_proto tunnel_proto;

/* Whether the tunnel is over (or ending): nothing more to relay. */
static int ended(const edge_tunnel *t)
{
    return t->u == NULL || t->c->state != EDGE_CONN_OPEN;
}

/* Any byte moved either way: the idle timeout starts again. */
static void activity(edge_tunnel *t)
{
    edge_conn_set_timeout(t->c, t->idle_timeout);
}

/* Closes the origin side; clean sends TLS close_notify first. */
static void close_origin(edge_tunnel *t, int clean)
{
    edge_upconn *u = t->u;
    if (u == NULL) return;
    t->u = NULL;
    ev_io_stop(t->loop, &t->up_rio);
    ev_io_stop(t->loop, &t->up_wio);
    u->clean = clean ? 1 : 0;       /* edge_upconn_free sends close_notify when set */
    edge_upconn_free(u);
}

static void fail(edge_tunnel *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(edge_tunnel *t, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    edge_log(EDGE_LOG_INFO, t->c->id, "tunnel closed: %s", why);
    close_origin(t, 0);
    edge_conn_close(t->c);          /* on_close writes the log line */
}

/* One side finished cleanly and what it sent was passed on: close the other
 * once the client has what is queued for it. */
static void finish(edge_tunnel *t, const char *who)
{
    edge_log(EDGE_LOG_DEBUG, t->c->id, "tunnel: %s finished sending, closing", who);
    close_origin(t, 1);
    edge_conn_close_after_flush(t->c);
}

/* Watches the origin for writability while a write or a TLS read waits for it. */
static void update_write_watch(edge_tunnel *t)
{
    if (t->write_blocked || t->read_wants_write) ev_io_start(t->loop, &t->up_wio);
    else ev_io_stop(t->loop, &t->up_wio);
}

/* ---- client to origin ---- */

/* Writes what the client sent (c->in) to the origin. While the origin does
 * not take it, c->in keeps it, and conn.c stops reading the client once that
 * reaches its input bound; every byte taken lets reading resume. */
static void to_origin(edge_tunnel *t)
{
    edge_conn *c = t->c;
    size_t before = c->in.len;
    t->write_blocked = 0;
    while (c->in.len > 0) {
        ssize_t w = edge_upconn_write(t->u, c->in.base, c->in.len);
        if (w < 0) {
            fail(t, "write to the origin %s failed: %s", t->u->peer, strerror(errno));
            return;
        }
        if (w == 0) {
            t->write_blocked = 1;
            break;
        }
        edge_buf_consume(&c->in, (size_t)w);
        t->bytes_up += (uint64_t)w;
    }
    update_write_watch(t);
    if (c->in.len < before) {
        activity(t);
        edge_conn_resume_read(c);   /* a no-op unless conn.c paused it, or after the client's EOF */
    }
    if (c->in.len == 0 && t->client_done) finish(t, "the client");
}

/* ---- origin to client ---- */

static void pause_origin(edge_tunnel *t)
{
    t->up_paused = 1;
    ev_io_stop(t->loop, &t->up_rio);
}

static void resume_origin(edge_tunnel *t)
{
    if (!t->up_paused || ended(t)) return;
    t->up_paused = 0;
    ev_io_start(t->loop, &t->up_rio);
    /* Bytes OpenSSL already decrypted raise no fd event. */
    ev_feed_event(t->loop, &t->up_rio, EV_READ);
}

/* Reads the origin straight into the client's output buffer, then flushes.
 * Stops reading while EDGE_TUNNEL_OUT_HIGH bytes wait for the client. */
static void from_origin(edge_tunnel *t)
{
    edge_conn *c = t->c;
    size_t got = 0;
    int eof = 0;
    t->read_wants_write = 0;
    for (int i = 0; i < READS_PER_WAKE; i++) {
        if (edge_conn_pending(c) >= EDGE_TUNNEL_OUT_HIGH) {
            pause_origin(t);
            break;
        }
        edge_buf_reserve(&c->out, READ_CHUNK);
        ssize_t r = edge_upconn_read(t->u, c->out.base + c->out.len, READ_CHUNK);
        if (r == -2) {
            t->read_wants_write = t->u->ssl && SSL_want_write(t->u->ssl);
            break;
        }
        if (r < 0) {
            fail(t, "read from the origin %s failed: %s", t->u->peer, strerror(errno));
            return;
        }
        if (r == 0) {
            eof = 1;
            break;
        }
        c->out.len += (size_t)r;
        got += (size_t)r;
    }
    if (got) {
        t->bytes_down += got;
        activity(t);
        if (edge_conn_flush(c) == EDGE_DONE || ended(t)) return;
    }
    if (eof) {
        finish(t, "the origin");    /* what it sent before goes out first */
        return;
    }
    update_write_watch(t);
    /* Stopped for fairness: what OpenSSL holds raises no fd event. */
    if (!t->up_paused && t->u->ssl && SSL_pending(t->u->ssl) > 0)
        ev_feed_event(t->loop, &t->up_rio, EV_READ);
}

static void on_up_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    edge_tunnel *t = edge_container_of(w, edge_tunnel, up_rio);
    if (ended(t)) return;
    from_origin(t);
}

/* The origin's socket is writable: a blocked write goes on, or a TLS read
 * that needed to write does. */
static void on_up_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    edge_tunnel *t = edge_container_of(w, edge_tunnel, up_wio);
    if (ended(t)) return;
    if (t->read_wants_write && !t->up_paused) {
        from_origin(t);
        if (ended(t)) return;
    }
    to_origin(t);
}

/* ---- the client connection's protocol ---- */

static void tunnel_on_data(edge_conn *c)
{
    edge_tunnel *t = c->proto_data;
    if (!ended(t)) to_origin(t);
}

/* Client output progressed: the origin may be read again below the low mark. */
static void tunnel_on_sent(edge_conn *c)
{
    edge_tunnel *t = c->proto_data;
    if (ended(t)) return;
    activity(t);
    if (t->up_paused && edge_conn_pending(c) <= EDGE_TUNNEL_OUT_LOW) resume_origin(t);
}

static void tunnel_on_drained(edge_conn *c)
{
    tunnel_on_sent(c);
}

/* FIN or close_notify from the client: what it sent goes on, then both close. */
static void tunnel_on_eof(edge_conn *c)
{
    edge_tunnel *t = c->proto_data;
    if (ended(t)) return;
    t->client_done = 1;
    to_origin(t);
}

static void tunnel_on_timeout(edge_conn *c)
{
    edge_tunnel *t = c->proto_data;
    if (ended(t)) return;
    fail(t, "no data either way for %gs", t->idle_timeout);
}

/* A graceful stop lets tunnels run: the drain timeout closes them at the
 * latest (a WebSocket has no request boundary to stop at). */
static void tunnel_on_shutdown(edge_conn *c)
{
}

/* The client connection is closing (any reason): the origin side goes too,
 * and the request that opened the tunnel is logged. */
static void tunnel_on_close(edge_conn *c)
{
    edge_tunnel *t = c->proto_data;
    close_origin(t, 0);
    edge_log(EDGE_LOG_DEBUG, c->id, "tunnel ended: %llu bytes to the origin, %llu to the client",
             (unsigned long long)t->bytes_up, (unsigned long long)t->bytes_down);
    if (t->log_req) {
        t->log_req->bytes_in += t->bytes_up;
        t->log_req->resp.streamed = t->bytes_down;     /* the log's bytes sent, as nginx's */
        edge_access_log_request(c->w, t->log_req);
        t->log_req = NULL;
    }
}

/* From the reaper: the tunnel, then the protocol state it replaced. */
static void tunnel_free(edge_conn *c)
{
    edge_tunnel *t = c->proto_data;
    c->proto = t->prev_proto;
    c->proto_data = t->prev_data;
    free(t);
    if (c->proto && c->proto->free) c->proto->free(c);
}

static const edge_proto tunnel_proto = {
    .on_data = tunnel_on_data,
    .on_drained = tunnel_on_drained,
    .on_sent = tunnel_on_sent,
    .on_timeout = tunnel_on_timeout,
    .on_eof = tunnel_on_eof,
    .on_shutdown = tunnel_on_shutdown,
    .on_close = tunnel_on_close,
    .free = tunnel_free,
};

/* ---- start ---- */

void edge_tunnel_start(edge_conn *c, edge_upconn *u, const char *early, size_t n,
                       double idle_timeout, edge_request *log_req)
{
    /* The origin connection's own watchers end here: ours take its fd. */
    ev_io_stop(u->loop, &u->io);
    ev_timer_stop(u->loop, &u->timer);
    if (c->state != EDGE_CONN_OPEN) {      /* the client left meanwhile */
        edge_upconn_free(u);
        return;
    }
    edge_tunnel *t = edge_calloc(1, sizeof(*t));
    t->c = c;
    t->u = u;
    t->loop = c->w->loop;
    t->idle_timeout = idle_timeout;
    t->log_req = log_req;
    t->prev_proto = c->proto;
    t->prev_data = c->proto_data;
    c->proto = &tunnel_proto;
    c->proto_data = t;
    ev_io_init(&t->up_rio, on_up_readable, u->fd, EV_READ);
    ev_io_init(&t->up_wio, on_up_writable, u->fd, EV_WRITE);
    edge_log(EDGE_LOG_DEBUG, c->id, "tunnel to %s started (%zu bytes after the 101)", u->peer, n);
    activity(t);

    if (n) {
        edge_conn_write(c, early, n);
        t->bytes_down += n;
    }
    if (edge_conn_flush(c) == EDGE_DONE || ended(t)) return;
    ev_io_start(t->loop, &t->up_rio);
    /* The origin may have more after the 101 already inside OpenSSL. */
    ev_feed_event(t->loop, &t->up_rio, EV_READ);
    /* Bytes the client sent after its request head, or its end, before the 101. */
    t->client_done = c->read_eof;
    if (c->in.len > 0 || t->client_done) to_origin(t);
    else edge_conn_resume_read(c);
}

/* ---- the switch from HTTP/1.1 (edge.proxy's 101) ---- */

int edge_tunnel_ready(const edge_request *req)
{
    return req->resp.status == 101 && req->resp.pipe && req->resp.pipe->upgrade;
}

/* The 101 head: edge's Server and Date, the upgrade fields (hop-by-hop, so
 * not in the response the script saw), then the origin's other fields
 * (Sec-WebSocket-Accept, -Protocol, -Extensions). */
static void put_head(edge_conn *c, edge_request *req)
{
    const edge_response *resp = &req->resp;
    const edge_header *up = edge_request_header(req, "upgrade", 7);
    edge_buf *out = &c->out;
    edge_buf_append_str(out, "HTTP/1.1 101 Switching Protocols\r\n");
    if (!resp->has_server) edge_buf_append_str(out, "Server: " EDGE_SERVER "\r\n");
    if (!resp->has_date) edge_buf_printf(out, "Date: %s\r\n", edge_worker_http_date(c->w));
    edge_buf_append_str(out, "Connection: upgrade\r\nUpgrade: ");
    if (up) edge_buf_append(out, edge_request_ptr(req, up->value), up->value.len);
    else edge_buf_append_str(out, "websocket");
    edge_buf_append_str(out, "\r\n");
    if (c->w->cfg->request_id_header) edge_buf_printf(out, "X-Request-Id: %s\r\n", edge_request_id(req));
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        edge_buf_append(out, resp->data.base + h->name.off, h->name.len);
        edge_buf_append(out, ": ", 2);
        edge_buf_append(out, resp->data.base + h->value.off, h->value.len);
        edge_buf_append(out, "\r\n", 2);
    }
    edge_buf_append(out, "\r\n", 2);
}

void edge_tunnel_upgrade(edge_conn *c, edge_request *req)
{
    edge_pipe *p = req->resp.pipe;
    edge_upconn *u = p->upgrade;
    p->upgrade = NULL;
    double idle = p->upgrade_idle > 0 ? p->upgrade_idle : c->w->cfg->keepalive_timeout;
    req->resp.pipe = NULL;
    edge_pipe_close(p);              /* ended already: 101 has no body */
    edge_worker_on_response(c->w, req);
    put_head(c, req);
    edge_tunnel_start(c, u, u->pending.base, u->pending.len, idle, req);
}
