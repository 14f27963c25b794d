/* The protocol-neutral request and response.
 *
 * A protocol layer (HTTP/1.1 now, HTTP/2 later) fills an edge_request, hands it
 * to the dispatcher with edge_dispatch_start(), and gets it back through
 * ops->respond() once req->resp is filled. This header includes neither llhttp
 * nor nghttp2: the dispatcher and Lua know nothing of the wire. */
#ifndef EDGE_REQUEST_H
#define EDGE_REQUEST_H

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "buf.h"
#include "lua_ctx.h"

#define EDGE_REQUEST_ID_MAX 64   /* longest X-Request-Id reused from a trusted proxy */

struct edge_worker;
struct edge_request;
struct edge_dispatch_waiter;
struct edge_pipe;
struct edge_cache_entry;

/* How the cache took part in a response (Cache-Status, X-Cache). */
enum edge_cache_outcome {
    EDGE_OUTCOME_NONE,            /* not through the cache, or an error page */
    EDGE_OUTCOME_HIT,             /* a fresh entry */
    EDGE_OUTCOME_GRACE,           /* an entry in grace, served while a refresh runs */
    EDGE_OUTCOME_MISS,            /* computed (pass / vary_miss say why) */
    EDGE_OUTCOME_REFRESH,         /* an expired entry was held; the origin sent a new answer */
    EDGE_OUTCOME_REVALIDATED,     /* ... the origin said 304: the entry's body, updated */
    EDGE_OUTCOME_STALE_ERROR      /* ... the origin failed: the entry (stale-if-error) */
};

/* The dispatcher's per-request state (owned by dispatch.c). */
typedef struct edge_dispatch_ctx {
    unsigned  counted : 1;        /* holds a slot of the in-flight limit */
    unsigned  leader : 1;         /* computes the response others wait for */
    unsigned  no_coalesce : 1;    /* was woken from a flight: compute on a miss */
    unsigned  woken : 1;          /* its leader finished: an entry still only in keep means it failed */
    unsigned  refresh : 1;        /* a background refresh (refresh.c): no client waits */
    unsigned  pass : 1;           /* a pass marker (hit-for-pass) sent it to the origin */
    unsigned  vary_miss : 1;      /* a Vary marker led to a variant not stored */
    unsigned  stored : 1;         /* the response is (being) stored */
    unsigned  conditional : 1;    /* edge.proxy sent the stale entry's validators */
    unsigned  outcome : 3;        /* enum edge_cache_outcome */
    int       fwd_status;         /* the origin's status behind a REFRESH / STALE_ERROR (0: none) */
    double    hit_ttl;            /* a HIT: freshness left, seconds */
    struct edge_cache_entry *stale;   /* an expired entry held (a reference) for stale-if-error
                                   * and revalidation, until the request completes */
    char     *flight_key;         /* the Vary variant's key the flight is for; NULL: the cache key */
    size_t    flight_klen;
    struct edge_dispatch_waiter *waiter;   /* while waiting for a leader */
    ev_timer  timer;              /* bounds that wait */
} edge_dispatch_ctx;

/* A byte range inside req->data (offsets survive the buffer's reallocation). */
typedef struct edge_span {
    uint32_t off;
    uint32_t len;
} edge_span;

typedef struct edge_header {
    edge_span name;   /* lower-case */
    edge_span value;
} edge_header;

/* What the protocol layer provides to the core. */
typedef struct edge_request_ops {
    /* req->resp is complete: encode and send it. Called exactly once per
     * dispatched request, as the dispatcher's last action on req. */
    void (*respond)(struct edge_request *req);
} edge_request_ops;

/* What a response's `cache` field asks of the cache (see cache_policy.h). */
enum { EDGE_CACHE_DEFAULT, EDGE_CACHE_OFF, EDGE_CACHE_ANY_STATUS, EDGE_CACHE_FORCE };

typedef struct edge_response {
    int       status;
    edge_buf  data;        /* header names and values */
    edge_header *headers;
    int       n_headers;
    int       cap_headers;
    edge_buf  body;
    double    ttl;         /* seconds in cache the script asked for (has_ttl) */
    double    grace;       /* stale-while-revalidate seconds the script asked for (has_grace) */
    double    keep;        /* stale-if-error seconds the script asked for (has_keep) */
    unsigned  has_ttl : 1;
    unsigned  has_grace : 1;
    unsigned  has_keep : 1;
    unsigned  cache_mode : 2;  /* EDGE_CACHE_* */
    unsigned  has_server : 1;
    unsigned  has_date : 1;
    unsigned  fetched_as_get : 1;  /* a HEAD sent to the origin as GET: its entry may answer GET */
    unsigned  no_compress : 1;     /* res.compress = false: never compressed (kept in its cache entry) */
    unsigned  compress_done : 1;   /* compress.c chose its encoding already (a cache hit) */
    uint64_t  streamed;      /* body bytes of a streamed response written so far (access log) */
    struct edge_pipe *pipe;  /* the body arrives over time (edge.proxy): body is unused and the
                              * protocol layer reads, then closes, the pipe (body_pipe.h) */
} edge_response;

/* The last edge.fetch a request made, for the access log (lua_fetch.c). */
typedef struct edge_upstream_note {
    char      addr[64];         /* "127.0.0.1:8080"; "" when no address was reached */
    int       status;           /* 0: no response */
    double    seconds;
    unsigned  used : 1;
} edge_upstream_note;

typedef struct edge_request {
    const edge_request_ops *ops;
    struct edge_worker *worker;
    uint64_t  conn_id;          /* for log lines */
    uint64_t  id_num;           /* worker id << 48 | sequence: unique per process */
    double    start;            /* when the request began arriving (loop time) */
    const char *cache_status;   /* "HIT", "MISS" or NULL, for the access log */
    char      id[EDGE_REQUEST_ID_MAX + 1];   /* id_num in hex, or a trusted X-Request-Id */

    edge_buf  data;             /* method, target and headers, copied off the wire */
    edge_span method;
    edge_span path;             /* without the query */
    edge_span query;            /* without '?'; len 0 and off UINT32_MAX when absent */
    edge_span host;             /* from Host or :authority, lower-case, no port */
    edge_span authority;        /* HTTP/2's :authority as received (edge.proxy's Host); len 0: none */
    edge_header *headers;
    int       n_headers;
    int       cap_headers;
    edge_buf  body;
    struct edge_pipe *body_pipe;   /* a body past --body-buffer, still arriving: the protocol
                                 * layer produces it; the request owns the pipe until edge.proxy
                                 * takes it (then the taker closes it), else reset/free close it,
                                 * which makes the protocol discard the rest (body_pipe.h) */
    unsigned  has_body : 1;     /* a body was sent (possibly empty) */
    unsigned  is_head : 1;
    unsigned  upgrade : 1;      /* HTTP/1.1 Upgrade + Connection: upgrade (a WebSocket handshake?) */
    unsigned  body_streamed : 1;   /* the body went to body_pipe (req.body_streamed) */
    const char *version;        /* "1.0", "1.1" or "2" */
    const char *scheme;         /* "https" or "http" */
    const char *tls_version;    /* "TLSv1.3", ..., NULL on cleartext */
    uint64_t  bytes_in;         /* request bytes read off the wire (access log) */
    const struct sockaddr_storage *peer;

    edge_buf  cache_key;        /* the cache_key hook's result */
    unsigned  has_cache_key : 1;

    edge_lua_ctx lua;           /* the hooks' Lua state for this request */
    edge_upstream_note upstream;
    edge_dispatch_ctx dispatch;
    edge_response resp;
} edge_request;

#define EDGE_SPAN_NONE UINT32_MAX

/* Prepares a zeroed request for use by a protocol layer. */
void edge_request_init(edge_request *req, const edge_request_ops *ops, struct edge_worker *w,
                       uint64_t conn_id);
/* Empties a finished request for the next one on the same connection, keeping
 * small buffers. The request must not be dispatched. */
void edge_request_reset(edge_request *req);
/* Frees what the request owns. The request must not be dispatched. */
void edge_request_free(edge_request *req);

/* Appends bytes to req->data and returns their span. */
edge_span edge_request_store(edge_request *req, const char *p, size_t n);
/* Adds a header; the name is stored lower-case. */
void edge_request_add_header(edge_request *req, const char *name, size_t nlen,
                             const char *value, size_t vlen);
/* Splits a request target into path and query (origin or absolute form).
 * An absolute-form target also sets req->host from its authority, which wins
 * over Host (RFC 9112 3.2.2), and gets the path "/" when it has none.
 * EDGE_ERROR for an authority without a host or with userinfo. */
int edge_request_set_target(edge_request *req, edge_span target);
/* Sets req->host from a Host/:authority value: lower-case, port stripped. */
void edge_request_set_host(edge_request *req, const char *p, size_t n);

static inline const char *edge_request_ptr(const edge_request *req, edge_span s)
{
    return req->data.base + s.off;
}

/* The client's address without the port ("127.0.0.1", "::1"); "" when unknown. */
void edge_request_peer_ip(const edge_request *req, char *out, size_t n);

/* The request id as 16 hex digits (formatted once, on first use). */
const char *edge_request_id(edge_request *req);

/* Whether the request's method is m (exactly, case-sensitive: RFC 9110 9.1). */
static inline int edge_request_method_is(const edge_request *req, const char *m)
{
    size_t n = strlen(m);
    return req->method.len == n && memcmp(req->data.base + req->method.off, m, n) == 0;
}

/* Copies from's bytes, fields (but those skip says, when not NULL) and
 * target into the empty request to, which no protocol owns (a background
 * refresh, the log phase's copy). */
void edge_request_copy(edge_request *to, const edge_request *from, int (*skip)(const char *name, size_t n));
/* Removes every request field of this lower-case name. */
void edge_request_remove_header(edge_request *req, const char *name, size_t nlen);
/* Finds a request header by lower-case name; NULL when absent. */
const edge_header *edge_request_header(const edge_request *req, const char *name, size_t nlen);

/* Response building. */
void edge_response_set_status(edge_response *resp, int status);
void edge_response_add_header(edge_response *resp, const char *name, size_t nlen,
                              const char *value, size_t vlen);
/* The first response field of this lower-case name; NULL when absent. */
const edge_header *edge_response_header(const edge_response *resp, const char *name, size_t nlen);
/* Removes every field of this lower-case name. */
void edge_response_remove_header(edge_response *resp, const char *name, size_t nlen);
/* Replaces resp's fields with from's (which is left without any). */
void edge_response_take_fields(edge_response *resp, edge_response *from);
/* Closes the body pipe resp holds, if any (its producer is cancelled). */
void edge_response_drop_pipe(edge_response *resp);
/* Empties the response (closing a body pipe it holds): 200, no field, no body. */
void edge_response_clear(edge_response *resp);
/* Replaces the response with a small text/plain error page for status. */
void edge_response_error(edge_response *resp, int status);

/* RFC 9110 tchar: a character allowed in a token (method, header name). */
int edge_http_is_tchar(int c);
/* Whether a response with this status carries a body (not 1xx, 204, 304). */
static inline int edge_http_status_has_body(int status)
{
    return !(status == 204 || status == 304 || (status >= 100 && status < 200));
}

/* Whether a request with this method may be sent again (RFC 9110 9.2.2). */
int edge_http_idempotent(const char *method, size_t n);

/* The standard reason phrase, or "Unknown". */
const char *edge_http_reason(int status);

#endif
