/* One client connection to an origin: a non-blocking connect, optional TLS,
 * writing one request, reading its response with llhttp (HTTP_RESPONSE), and
 * the connect/send/read timers. Between requests a pool may hold it idle.
 *
 * Ownership: a connection has one owner at a time, the fetch that runs an
 * exchange on it or the pool that keeps it idle. The owner frees it with
 * edge_upconn_free(); nothing else does. */
#ifndef EDGE_UPSTREAM_CONN_H
#define EDGE_UPSTREAM_CONN_H

#include <ev.h>
#include <llhttp.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "buf.h"
#include "request.h"

#define EDGE_UPSTREAM_HEADER_BYTES  32768   /* a response's status line and headers, at most */
#define EDGE_UPSTREAM_HEADER_FIELDS 128

typedef struct edge_fetch_timeouts {
    double connect;   /* TCP connect and TLS handshake together */
    double send;      /* between two successful writes */
    double read;      /* between two successful reads */
} edge_fetch_timeouts;

/* How an exchange ended. */
enum edge_upconn_result {
    EDGE_UPCONN_DONE,            /* a complete response is in c->resp */
    EDGE_UPCONN_STALE,           /* a reused connection failed before any response byte */
    EDGE_UPCONN_CONNECT_FAILED,  /* refused, unreachable, timed out or TLS failed */
    EDGE_UPCONN_TIMEOUT,         /* send or read timeout (no response byte yet: retryable) */
    EDGE_UPCONN_FAILED           /* anything else: malformed, too big, closed mid-response */
};

typedef struct edge_upconn edge_upconn;

/* Called exactly once per exchange, from the loop, never after
 * edge_upconn_free(). err is a message for people (valid during the call). */
typedef void (*edge_upconn_cb)(edge_upconn *c, int result, const char *err, void *ud);
/* An idle connection closed by the origin, stray bytes or its idle timer:
 * the owner (its pool) must unlink and free it. */
typedef void (*edge_upconn_idle_cb)(edge_upconn *c, void *ud);
/* Streaming (edge.proxy): the response head is in c->resp (the body is not
 * buffered). Runs inside the parser: the callee sets c->pipe (or leaves it
 * NULL to drop the body), may move the head out of c->resp, and must not
 * free c or call back into anything that could (defer that to the loop). */
typedef void (*edge_upconn_head_cb)(edge_upconn *c, void *ud);

/* The TLS side of a new connection. */
typedef struct edge_upconn_tls {
    SSL_CTX    *ctx;          /* NULL: cleartext */
    const char *sni;          /* server name sent; NULL for an IP literal */
    const char *verify_name;  /* the name (or IP) the certificate must match; NULL: verify off */
    SSL_SESSION *session;     /* to resume, or NULL */
} edge_upconn_tls;

enum edge_upconn_state { UC_CONNECTING, UC_HANDSHAKE, UC_SENDING, UC_READING, UC_IDLE, UC_DONE };

struct edge_pipe;

struct edge_upconn {
    struct ev_loop *loop;
    int         fd;
    int         connect_errno;     /* connect(2) failed at once: reported from the loop */
    SSL        *ssl;
    ev_io       io;
    ev_timer    timer;             /* fires at or before deadline (see set_deadline) */
    ev_tstamp   deadline;          /* when the current phase times out */
    ev_tstamp   timer_for;         /* the deadline the timer was last set for */
    llhttp_t    parser;
    enum edge_upconn_state state;
    uint32_t    nreq;              /* exchanges started on this connection */
    ev_tstamp   born;
    char        peer[64];          /* "127.0.0.1:8080", "[::1]:443" */
    struct edge_pool *pool;        /* the pool it returns to (pool.c's) */
    edge_upconn *next;             /* in its pool's idle stack */

    /* the exchange in progress */
    const char *out;               /* the request bytes: the caller's, valid until cb runs */
    size_t      out_len, out_off;
    int         send_errno;        /* the write made by edge_upconn_exchange failed */
    const char *label;             /* what timeouts name (the URL); the fetch's, outlives the exchange */
    edge_fetch_timeouts to;
    size_t      max_body;
    edge_response resp;
    edge_buf    hname, hvalue;
    size_t      header_bytes;
    int         header_fields;
    unsigned    is_head : 1, reused : 1, got_bytes : 1, complete : 1, reusable : 1, in_value : 1,
                clean : 1;                 /* the last exchange ended with a whole response */
    edge_upconn_cb cb;
    void       *ud;
    /* streaming: the head goes to head_cb, body bytes to pipe */
    edge_upconn_head_cb head_cb;
    struct edge_pipe *pipe;
    edge_buf    pending;           /* bytes read past a pause, fed first when reading resumes */
    unsigned    resumed : 1,       /* edge_upconn_resume ran: feed the parser once before reading */
                read_paused : 1,   /* the pipe is full: no reading until edge_upconn_resume */
                pipe_gone : 1,     /* the pipe's consumer closed it mid-write */
                upgrade_ok : 1,    /* WebSocket: the request asked for Upgrade, a 101 may come (set
                                    * after starting the exchange) */
                upgraded : 1;      /* ... and came: the exchange ended at its head, c->pending holds
                                    * the bytes after it, the connection is tunnel.c's to take */
    /* a request body from a pipe (past --body-buffer): sent after the head as
     * it arrives; the pipe is borrowed (its owner closes it after this exchange) */
    struct edge_pipe *body;
    edge_buf    frame;             /* chunk framing still to write, from frame_off */
    size_t      frame_off;
    size_t      chunk_left;        /* bytes of the current chunk's data still to write */
    uint64_t    body_left;         /* a body of known length: bytes still to send */
    unsigned    body_chunked : 1,  /* no length: Transfer-Encoding: chunked */
                body_last : 1,     /* the last chunk is in frame */
                body_waiting : 1;  /* the pipe is empty: waiting on the client */
    edge_upconn_idle_cb idle_cb;
    void       *idle_ud;
    char        err[320];
};

/* Starts a non-blocking connect to addr (and TLS when tls->ctx is set); the
 * connection waits for edge_upconn_exchange. NULL with a message in err when
 * no socket can be made; a refused connect is reported by the exchange. */
edge_upconn *edge_upconn_open(struct ev_loop *loop, const struct sockaddr_storage *addr,
                              const edge_upconn_tls *tls, char *err, size_t errlen);

/* Sends wire (not copied: it must stay valid until cb runs) and reads one
 * response; cb runs exactly once, later, from the loop. The connection must
 * be new or idle (taken off its pool); an idle one writes at once. */
void edge_upconn_exchange(edge_upconn *c, const char *wire, size_t n, const edge_fetch_timeouts *to,
                          size_t max_body, int is_head, const char *label, edge_upconn_cb cb, void *ud);

/* The same exchange, streaming the response: head_cb gets the head, then the
 * body goes to c->pipe as it arrives (bounded: reading stops while the pipe is
 * full) and cb reports the end. max_body does not apply.
 * body, when not NULL, is the request body still arriving: after wire (the
 * head) its bytes are sent as the pipe gets them (chunk-framed when
 * chunked), and the response is read once it ended. The send deadline runs
 * only while bytes wait for the origin; an empty pipe waits on the client
 * (whose own body timeout bounds it). A pipe that fails fails the exchange. */
void edge_upconn_exchange_stream(edge_upconn *c, const char *wire, size_t n, const edge_fetch_timeouts *to,
                                 int is_head, const char *label, edge_upconn_head_cb head_cb,
                                 struct edge_pipe *body, int body_chunked, edge_upconn_cb cb, void *ud);
/* The pipe has room again: reading goes on (from the loop). */
void edge_upconn_resume(edge_upconn *c);

/* After EDGE_UPCONN_DONE: whether the connection may serve another request
 * (response delimited and fully read, no stray bytes, no Connection: close). */
int edge_upconn_reusable(const edge_upconn *c);

/* Parks the connection: a read watcher (EOF or stray bytes) and an idle
 * timer; either calls cb, after which the owner frees the connection. */
void edge_upconn_park(edge_upconn *c, double idle_timeout, edge_upconn_idle_cb cb, void *ud);

/* The TLS session to resume next time, or NULL (a new reference). */
SSL_SESSION *edge_upconn_session(edge_upconn *c);

/* Raw I/O on a connection taken over after 101 Switching Protocols (tunnel.c).
 * read: > 0 bytes, 0 EOF, -1 failed (errno), -2 would block;
 * write: > 0 bytes, 0 would block, -1 failed (errno). */
ssize_t edge_upconn_read(edge_upconn *c, char *buf, size_t n);
ssize_t edge_upconn_write(edge_upconn *c, const char *p, size_t n);

/* Stops every watcher, closes and frees. No callback runs afterwards. */
void edge_upconn_free(edge_upconn *c);

#endif
