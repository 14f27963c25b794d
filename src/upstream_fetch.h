/* One HTTP request to an origin, on a worker's loop: resolve (when the
 * target is a name), take a pooled connection or open one, exchange, retry
 * where it is safe, and report once.
 *
 * The callback contract: cb runs exactly once, always from the loop (never
 * inside edge_upstream_fetch), and never after edge_fetch_cancel(). When it
 * runs the fetch is already freed: the handle must not be used again.
 *
 * Streaming (r->stream): cb runs once the response head is in, with the body
 * as a pipe (body_pipe.h) that this fetch goes on filling; from then on the
 * pipe owns the fetch (closing the pipe early cancels it), and the handle
 * must not be used again either. Before the head, retries work as above. */
#ifndef EDGE_UPSTREAM_FETCH_H
#define EDGE_UPSTREAM_FETCH_H

#include <stddef.h>
#include <sys/socket.h>

#include "request.h"
#include "upstream_conn.h"
#include "upstream_pool.h"

struct edge_worker;

/* Where to send. Strings are copied. */
typedef struct edge_fetch_target {
    const char *host;        /* name or IP literal (no brackets): resolved, and what the
                              * certificate must match unless sni is given */
    int         port;
    int         tls;
    int         verify;      /* 0 only when the script asked (tls.verify = false) */
    const char *sni;         /* the name sent and checked; NULL: host (no SNI for an IP) */
    const char *ca_file;     /* NULL: the system store */
    edge_keepalive keepalive;
    const struct sockaddr_storage *addr;   /* already resolved (named upstreams), or NULL */
    int         stats_slot;  /* the /metrics upstream label (edge_metrics_upstream_slot); 0: "" */
    double      dns_valid;   /* seconds a resolved answer is used (an upstream's dns.valid); 0: its TTL */
} edge_fetch_target;

/* What to send. wire is the whole request (line, headers, body), copied. */
typedef struct edge_fetch_request {
    const char *wire;
    size_t      wire_len;
    const char *label;       /* names the request in timeout messages (the URL); copied */
    unsigned    is_head : 1;
    unsigned    idempotent : 1;   /* may be sent again (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) */
    unsigned    uncounted : 1;    /* a health check: kept out of the request metrics */
    unsigned    stream : 1;       /* edge.proxy: report at the head, stream the body (below) */
    unsigned    upgrade : 1;      /* streaming, a WebSocket handshake: a 101 leaves its connection
                                   * in the pipe (pipe->upgrade) for tunnel.c */
    struct edge_pipe *body;  /* streaming: a request body still arriving, sent after wire (which
                              * then holds the head only); borrowed: the caller closes it once
                              * the fetch reported or was cancelled. Always on a new connection;
                              * never tried again once a body byte was taken */
    unsigned    body_chunked : 1;   /* body has no length: sent chunk-framed */
    int         retries;     /* more tries after a connect failure or a timeout before any
                              * response byte, idempotent requests only */
    size_t      max_body;
    edge_fetch_timeouts timeout;
} edge_fetch_request;

typedef struct edge_fetch_result {
    edge_response *resp;     /* the response, or NULL on error; the callback may move its
                              * buffers out (and zero them) */
    const char *err;         /* on error: a message for people */
    const char *peer;        /* the address last tried, "" when none */
    double      seconds;     /* from the start of the fetch */
    unsigned    failure;     /* on error: one edge_upstream_failure bit (balancer.h) */
    struct edge_pipe *pipe;  /* streaming: the body, arriving (the callee owns it: it hands it
                              * to a response, or edge_pipe_close()s it) */
} edge_fetch_result;

typedef void (*edge_fetch_cb)(void *ud, edge_fetch_result *r);
typedef struct edge_fetch edge_fetch;

/* Starts the fetch; never NULL. See the callback contract above. */
edge_fetch *edge_upstream_fetch(struct edge_worker *w, const edge_fetch_target *t,
                                const edge_fetch_request *r, edge_fetch_cb cb, void *ud);
/* Abandons the fetch: its connection is closed, not pooled; cb never runs. */
void edge_fetch_cancel(edge_fetch *f);

#endif
