/* A client connection: the socket, its TLS session, its buffers, its watchers
 * and its timer. The protocol chosen by ALPN (HTTP/1.1 now) plugs in through
 * edge_proto and talks to the wire only through this module.
 *
 * Lifetime: edge_conn_close() ends a connection at once (the protocol's
 * on_close cancels its requests); the memory is freed by the worker before
 * its next poll, so a caller up the stack may still test c->closed. */
#ifndef EDGE_CONN_H
#define EDGE_CONN_H

#include <ev.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"

struct edge_worker;
struct edge_conn;

typedef struct edge_proto {
    /* New bytes are in c->in; consume what can be used (edge_buf_consume). */
    void (*on_data)(struct edge_conn *c);
    /* Everything queued was written. */
    void (*on_drained)(struct edge_conn *c);
    /* Some output was written (c->out_flushed + c->out_sent grew); optional.
     * Must not write or flush. */
    void (*on_sent)(struct edge_conn *c);
    /* The timer set with edge_conn_set_timeout fired. */
    void (*on_timeout)(struct edge_conn *c);
    /* The client finished sending (FIN, or TLS close_notify): reading has
     * stopped for good. The protocol answers what it received completely,
     * then closes. NULL: the connection closes at once. */
    void (*on_eof)(struct edge_conn *c);
    /* The server is shutting down: finish what is in progress, then close. */
    void (*on_shutdown)(struct edge_conn *c);
    /* The connection is closing: cancel requests. No more calls follow but
     * free, and the protocol state must stay valid until then. */
    void (*on_close)(struct edge_conn *c);
    /* Frees the protocol state (from the reaper, once nothing is on the stack). */
    void (*free)(struct edge_conn *c);
    /* Nothing arrived for a while: give back memory the protocol can rebuild,
     * if it is between requests. Returns 1 when it holds nothing in progress
     * (the connection's own buffers may go too). NULL: the protocol keeps no
     * buffers of its own, and empty c->in / c->out may always go (HTTP/2,
     * whose state is nghttp2's; a WebSocket tunnel). */
    int  (*trim)(struct edge_conn *c);
} edge_proto;

enum edge_conn_state {
    EDGE_CONN_HANDSHAKE,  /* TLS handshake, or (cleartext) waiting to tell h2 preface from h1 */
    EDGE_CONN_OPEN,
    EDGE_CONN_LINGER,     /* final response sent: read and discard, then close */
    EDGE_CONN_CLOSED
};

typedef struct edge_conn {
    struct edge_worker *w;
    uint64_t   id;
    int        fd;
    SSL       *ssl;              /* NULL on a cleartext listener */
    enum edge_conn_state state;
    ev_io      rio;
    ev_io      wio;
    ev_timer   timer;            /* the protocol's (or the handshake's) timeout */
    ev_timer   send_timer;       /* the client stopped taking our output */
    edge_buf   in;               /* received, not yet consumed by the protocol */
    edge_buf   out;              /* queued for sending */
    size_t     out_sent;         /* bytes of out already written */
    uint64_t   out_flushed;      /* bytes written before out's last reset: out_flushed +
                                    out_sent counts every byte written, out_flushed +
                                    out.len every byte queued */
    const edge_proto *proto;
    void      *proto_data;
    struct sockaddr_storage peer;
    unsigned   proto_kind : 2;         /* EDGE_PROTO_H1 / EDGE_PROTO_H2, once attached */
    unsigned   read_paused : 1;
    unsigned   read_eof : 1;           /* the client finished sending: reading never resumes */
    unsigned   close_when_flushed : 1;
    unsigned   read_wants_write : 1;   /* SSL_read returned WANT_WRITE */
    unsigned   write_wants_read : 1;   /* SSL_write returned WANT_READ */
    unsigned   read_since_trim : 1;    /* bytes arrived since the last edge_conn_trim */
    unsigned   trimmed : 1;            /* trimmed, and nothing read or written since */
    unsigned   tls_keeps_buffers : 1;  /* busy: OpenSSL keeps its record buffers (conn.c) */
    struct edge_conn *prev, *next;     /* the worker's open list, then its closed list */
} edge_conn;

/* Takes ownership of an accepted socket and starts the TLS handshake (or, when
 * plain, waits for the first bytes to pick HTTP/2 prior knowledge or HTTP/1.1). */
void edge_conn_accept(struct edge_worker *w, int fd, const struct sockaddr_storage *peer, int plain);

/* Queues bytes for sending. */
static inline void edge_conn_write(edge_conn *c, const void *p, size_t n)
{
    edge_buf_append(&c->out, p, n);
}
/* Sends what is queued. EDGE_OK when all of it went out, EDGE_AGAIN when the
 * rest waits for the socket (on_drained follows), EDGE_DONE when the
 * connection closed (a write error, or close_when_flushed). */
int edge_conn_flush(edge_conn *c);
/* Bytes queued and not yet written. */
static inline size_t edge_conn_pending(const edge_conn *c)
{
    return c->out.len - c->out_sent;
}

/* Closes at once. Safe to call more than once. */
void edge_conn_close(edge_conn *c);
/* Stops reading and closes once the queued output is written (gracefully:
 * close_notify, then a short linger so the peer reads the last response). */
void edge_conn_close_after_flush(edge_conn *c);

/* Stops or restarts reading (backpressure while a request is in progress).
 * Resuming does nothing once the client finished sending (read_eof). */
void edge_conn_pause_read(edge_conn *c);
void edge_conn_resume_read(edge_conn *c);

/* Arms the connection's single timer (seconds > 0) or stops it (0). */
void edge_conn_set_timeout(edge_conn *c, double seconds);

/* The worker's periodic idle sweep (every second): a connection that received
 * nothing since the previous sweep and is between requests frees its buffers
 * and its protocol's, and OpenSSL's record buffers go back to being released
 * when empty; so an idle keep-alive connection costs little more than its TLS
 * session. A connection that was busy keeps its record buffers across
 * requests; the per-request cost is nothing but a flag. */
void edge_conn_trim(edge_conn *c);

/* Frees a closed connection (the worker calls this before its next poll). */
void edge_conn_free(edge_conn *c);

#endif
