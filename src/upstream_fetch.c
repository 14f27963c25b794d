/* edge.fetch's C side: one request to an origin, with its retries. */
#include "upstream_fetch.h"
#include "body_pipe.h"
#include "common.h"
#include "balancer.h"
#include "log.h"
#include "metrics.h"
#include "resolver.h"
#include "worker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct edge_fetch {
    edge_worker *w;
    edge_pool   *pool;          /* set once the address is known; busy while held */
    edge_upconn *conn;          /* the connection of the exchange in progress */
    edge_resolve_query *query;  /* while the host is being resolved */
    struct sockaddr_storage *more_addrs;   /* the host's addresses after the first, or NULL */
    int          n_addrs, addr_i;    /* how many addresses the host has, and the one in use */
    struct sockaddr_storage addr;
    char        *host, *sni, *ca_file, *label, *wire;
    size_t       wire_len;
    int          port, tls, verify, is_head, idempotent, retries_left, stale_retried, slot, uncounted;
    int          stream;        /* report at the head; the body goes to pipe */
    int          upgrade;       /* a 101 is welcome: its connection goes to the pipe */
    int          reported;      /* streaming: cb ran (the pipe now owns f) */
    edge_pipe   *pipe;          /* streaming: being filled, until edge_pipe_end */
    edge_pipe   *body;          /* a request body arriving (borrowed), or NULL */
    int          body_chunked;
    unsigned     failure;       /* why it failed: an edge_upstream_failure bit */
    size_t       max_body;
    edge_fetch_timeouts to;
    edge_keepalive ka;
    double       dns_valid;
    ev_timer     defer;         /* reports an error found before any I/O, from the loop */
    double       started;
    edge_response resp;         /* the response, moved off its connection */
    int          ok;
    edge_fetch_cb cb;
    void        *ud;
    char         peer[64];
    char         err[384];
};

static void attempt(edge_fetch *f, int fresh);

/* ---- reporting ---- */

static void free_fetch(edge_fetch *f)
{
    ev_timer_stop(f->w->loop, &f->defer);
    if (f->query) edge_resolver_cancel(f->query);
    if (f->conn) {
        edge_upconn_free(f->conn);
        edge_counter_sub(&f->w->counters.upstreams[f->slot].conns_active, 1);
    }
    if (f->pool) f->pool->busy--;
    if (f->pipe && !f->reported) {          /* made at the head, never handed out */
        edge_pipe_end(f->pipe, 0);
        edge_pipe_close(f->pipe);
    }
    edge_buf_free(&f->resp.data);
    edge_buf_free(&f->resp.body);
    free(f->resp.headers);
    free(f->sni);
    free(f->ca_file);
    free(f->more_addrs);
    free(f);                /* host, label and wire live in f's block */
}

static void report_head(edge_fetch *f);

/* Frees f, then runs the callback: whatever it does (it may free the
 * request that started f), f is no longer there to be touched. */
static void report(edge_fetch *f)
{
    if (f->stream && f->ok) {
        report_head(f);
        return;
    }
    edge_response resp = f->resp;
    memset(&f->resp, 0, sizeof(f->resp));
    char err[sizeof(f->err)], peer[sizeof(f->peer)];
    memcpy(err, f->err, sizeof(err));
    memcpy(peer, f->peer, sizeof(peer));
    edge_fetch_result r = {.resp = f->ok ? &resp : NULL, .err = err, .peer = peer,
                           .seconds = ev_now(f->w->loop) - f->started,
                           .failure = f->ok ? 0 : f->failure ? f->failure : EDGE_UPSTREAM_FAIL_ERROR};
    if (!f->uncounted) edge_metrics_upstream(&f->w->counters, f->slot, f->ok ? resp.status : 0, r.seconds);
    edge_fetch_cb cb = f->cb;
    void *ud = f->ud;
    free_fetch(f);
    cb(ud, &r);
    edge_buf_free(&resp.data);
    edge_buf_free(&resp.body);
    free(resp.headers);
}

/* Streaming: the head goes to cb with the pipe; f stays as the pipe's
 * producer while the exchange goes on (freed here when it already ended). */
static void report_head(edge_fetch *f)
{
    edge_response head = f->resp;
    memset(&f->resp, 0, sizeof(f->resp));
    edge_fetch_result r = {.resp = &head, .err = "", .peer = f->peer,
                           .seconds = ev_now(f->w->loop) - f->started, .pipe = f->pipe};
    if (!f->uncounted) edge_metrics_upstream(&f->w->counters, f->slot, head.status, r.seconds);
    char peer[sizeof(f->peer)];
    memcpy(peer, f->peer, sizeof(peer));
    r.peer = peer;
    edge_fetch_cb cb = f->cb;
    void *ud = f->ud;
    f->reported = 1;
    if (f->conn == NULL) free_fetch(f);     /* the body is all in the pipe already */
    cb(ud, &r);                             /* may close the pipe, which frees f */
    edge_buf_free(&head.data);
    edge_buf_free(&head.body);
    free(head.headers);
}

static void on_defer(struct ev_loop *loop, ev_timer *t, int revents)
{
    report(edge_container_of(t, edge_fetch, defer));
}

/* Errors found before any I/O (a name that does not resolve, a CA file
 * that does not load) are the connect's failures. */
static void fail_later(edge_fetch *f, const char *msg)
{
    f->failure = EDGE_UPSTREAM_FAIL_CONNECT;
    snprintf(f->err, sizeof(f->err), "%s", msg);
    f->ok = 0;
    ev_timer_set(&f->defer, 0., 0.);
    ev_timer_start(f->w->loop, &f->defer);
}

/* ---- the exchange's outcome ---- */

static int may_retry(edge_fetch *f, int result)
{
    if (!f->idempotent) return 0;
    if (f->body && f->body->consumed > 0) return 0;   /* those bytes are gone: no replay */
    if (result == EDGE_UPCONN_STALE && !f->stale_retried) {
        f->stale_retried = 1;             /* once, and not counted as a failure */
        return 1;
    }
    if ((result == EDGE_UPCONN_CONNECT_FAILED || result == EDGE_UPCONN_TIMEOUT) && f->retries_left > 0) {
        f->retries_left--;
        return 1;
    }
    return 0;
}

static void use_address(edge_fetch *f, const struct sockaddr_storage *addr);

/* A host with several addresses: a connect failure moves on to the next one
 * (not counted as a retry), as browsers and curl do. */
static int next_address(edge_fetch *f, int result)
{
    if (result != EDGE_UPCONN_CONNECT_FAILED || f->addr_i + 1 >= f->n_addrs) return 0;
    f->pool->busy--;
    f->pool = NULL;
    ++f->addr_i;
    use_address(f, &f->more_addrs[f->addr_i - 1]);
    return 1;
}

/* The balancer's name for why an exchange failed (retries.on's words). */
static unsigned failure_of(int result, const char *err)
{
    switch (result) {
    case EDGE_UPCONN_CONNECT_FAILED: return EDGE_UPSTREAM_FAIL_CONNECT;
    case EDGE_UPCONN_TIMEOUT:        return EDGE_UPSTREAM_FAIL_TIMEOUT;
    case EDGE_UPCONN_FAILED:
        return strncmp(err, "malformed response", 18) == 0 ? EDGE_UPSTREAM_FAIL_INVALID_HEADER
                                                            : EDGE_UPSTREAM_FAIL_ERROR;
    default:                         return EDGE_UPSTREAM_FAIL_ERROR;
    }
}

/* ---- streaming ---- */

static void free_upconn(void *c)
{
    edge_upconn_free(c);
}

static void stream_resume(void *ud)
{
    edge_fetch *f = ud;
    if (f->conn) edge_upconn_resume(f->conn);
}

/* The pipe's consumer left before the body ended: close, never pool. */
static void stream_cancel(void *ud)
{
    edge_fetch *f = ud;
    f->pipe = NULL;
    free_fetch(f);
}

/* Inside the parser: make the pipe and report from the loop (the callback
 * wakes Lua, which must not run under llhttp). */
static void on_head(edge_upconn *c, void *ud)
{
    edge_fetch *f = ud;
    const llhttp_t *p = &c->parser;
    int64_t length = -1;
    if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED)) length = (int64_t)p->content_length;
    if (!edge_http_status_has_body(c->resp.status)) length = 0;
    edge_pipe_producer producer = {.resume = stream_resume, .cancel = stream_cancel, .ud = f};
    f->pipe = c->pipe = edge_pipe_new(length, f->w->cfg ? f->w->cfg->proxy_buffer : 0, &producer);
    f->pipe->no_body = f->is_head;
    f->resp = c->resp;                      /* the head; the body is not buffered */
    memset(&c->resp, 0, sizeof(c->resp));
    f->ok = 1;
    ev_timer_set(&f->defer, 0., 0.);
    ev_timer_start(f->w->loop, &f->defer);
}

/* The streamed exchange ended: the connection is pooled or closed, the pipe
 * told; f goes unless its report is still to run. */
static void stream_end(edge_fetch *f, edge_upconn *c, int result, const char *err)
{
    if (c->pipe_gone) f->pipe = NULL;       /* the pipe freed itself */
    int unseen_failure = !f->reported && result != EDGE_UPCONN_DONE;
    if (unseen_failure) {
        /* Failed before the script saw the head: nothing reached the client,
         * so the report says failure (a 502), not a 200 with a cut body. */
        f->ok = 0;
        f->failure = failure_of(result, err);
        snprintf(f->err, sizeof(f->err), "%s", err);   /* err is c's: copied before c goes */
    }
    if (result == EDGE_UPCONN_DONE && c->upgraded && f->pipe) {
        f->pipe->upgrade = c;               /* WebSocket: tunnel.c takes it from the response */
        f->pipe->upgrade_free = free_upconn;
    } else if (result == EDGE_UPCONN_DONE && edge_upconn_reusable(c)) {
        if (c->ssl) edge_pool_keep_session(f->pool, c);
        if (f->ka.size > 0) edge_pool_put(f->pool, c);
        else edge_upconn_free(c);
    } else {
        if (result != EDGE_UPCONN_DONE && f->pipe && f->reported)
            edge_log(EDGE_LOG_ERR, 0, "upstream %s: response body cut short: %s", f->peer, err);
        edge_upconn_free(c);
    }
    edge_pipe *pipe = f->pipe;
    if (unseen_failure) return;             /* free_fetch ends and closes the pipe */
    if (!f->reported) {                     /* the report, still to run, hands the ended pipe out */
        if (pipe) edge_pipe_end(pipe, 1);
        return;
    }
    f->pipe = NULL;
    free_fetch(f);
    if (pipe) edge_pipe_end(pipe, result == EDGE_UPCONN_DONE);
}

static void on_exchange(edge_upconn *c, int result, const char *err, void *ud)
{
    edge_fetch *f = ud;
    if (f->pipe || c->pipe_gone) {
        f->conn = NULL;
        edge_counter_sub(&f->w->counters.upstreams[f->slot].conns_active, 1);
        stream_end(f, c, result, err);
        return;
    }
    f->conn = NULL;
    edge_upstream_stats *st = &f->w->counters.upstreams[f->slot];
    edge_counter_sub(&st->conns_active, 1);
    if (result == EDGE_UPCONN_CONNECT_FAILED && !f->uncounted) EDGE_COUNT(st->connect_failures);
    f->failure = failure_of(result, err);
    if (result == EDGE_UPCONN_DONE) {
        f->resp = c->resp;
        memset(&c->resp, 0, sizeof(c->resp));
        f->ok = 1;
        if (c->ssl) edge_pool_keep_session(f->pool, c);
        if (f->ka.size > 0) edge_pool_put(f->pool, c);
        else edge_upconn_free(c);           /* keepalive = false: the pool is not ours to change */
        report(f);
        return;
    }
    /* A timeout after response bytes is not retried: the origin acted on it. */
    int retry = next_address(f, result) ||
                (!(result == EDGE_UPCONN_TIMEOUT && c->got_bytes) && may_retry(f, result));
    snprintf(f->err, sizeof(f->err), "%s", err);
    edge_upconn_free(c);
    if (!retry) {
        report(f);
        return;
    }
    edge_log(EDGE_LOG_INFO, 0, "edge.fetch: trying %s again on a new connection: %s", f->label, f->err);
    attempt(f, 1);
}

/* ---- connecting ---- */

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static edge_upconn *open_conn(edge_fetch *f)
{
    char err[320];
    edge_upconn_tls tls = {0};
    if (f->tls) {
        tls.ctx = edge_pools_client_ctx(&f->w->upstream_pools, f->ca_file, err, sizeof(err));
        if (tls.ctx == NULL) {
            fail_later(f, err);
            return NULL;
        }
        const char *name = f->sni ? f->sni : f->host;
        tls.sni = is_ip_literal(name) ? NULL : name;
        tls.verify_name = f->verify ? name : NULL;
        tls.session = f->pool->session;
    }
    edge_upconn *c = edge_upconn_open(f->w->loop, &f->addr, &tls, err, sizeof(err));
    if (c == NULL) fail_later(f, err);
    else if (!f->uncounted) EDGE_COUNT(f->w->counters.upstream_conns_opened);
    return c;
}

/* Sends on the warmest idle connection, or on a new one when fresh is set
 * (a retry) or the pool is empty. */
static void attempt(edge_fetch *f, int fresh)
{
    /* A streamed body cannot be replayed: never on a connection that may
     * turn out stale. */
    edge_upconn *c = fresh || f->ka.size == 0 || f->body ? NULL : edge_pool_take(f->pool);
    if (c && !f->uncounted) EDGE_COUNT(f->w->counters.upstream_conns_reused);
    else if ((c = open_conn(f)) == NULL) return;
    size_t plen = strnlen(c->peer, sizeof(f->peer) - 1);
    memcpy(f->peer, c->peer, plen);
    f->peer[plen] = '\0';
    f->conn = c;
    edge_counter_add(&f->w->counters.upstreams[f->slot].conns_active, 1);
    edge_pools_lend_response(&f->w->upstream_pools, &c->resp);
    if (f->stream) {
        edge_upconn_exchange_stream(c, f->wire, f->wire_len, &f->to, f->is_head, f->label, on_head, f->body,
                                    f->body_chunked, on_exchange, f);
        c->upgrade_ok = f->upgrade;
    }
    else
        edge_upconn_exchange(c, f->wire, f->wire_len, &f->to, f->max_body, f->is_head, f->label, on_exchange, f);
}

static char *key_str(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    p[n] = '|';
    return p + n + 1;
}

static char *key_int(char *p, unsigned v)
{
    char d[16];
    size_t i = sizeof(d);
    do d[--i] = (char)('0' + v % 10); while ((v /= 10) != 0 && i > 0);
    return key_str(p, d + i, sizeof(d) - i);
}

static char *key_hex(char *p, const unsigned char *b, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p++ = '|';
    return p;
}

#define KEY_STACK 512

/* The pool key: everything that makes a connection distinct, never
 * truncated (two origins must never share a pool). Made for every fetch, so
 * by hand (no printf, no inet_ntop: the address is in hex) and on the stack
 * when it fits. Returns the key; *heap is what to free, if anything. */
static char *pool_key(const edge_fetch *f, const struct sockaddr_storage *addr, char stack[KEY_STACK],
                      char **heap)
{
    const unsigned char *ab = addr->ss_family == AF_INET6
        ? (const unsigned char *)&((const struct sockaddr_in6 *)addr)->sin6_addr
        : (const unsigned char *)&((const struct sockaddr_in *)addr)->sin_addr;
    size_t alen = addr->ss_family == AF_INET6 ? 16 : 4;
    const char *name = f->sni ? f->sni : f->host;
    size_t nlen = strlen(name), clen = f->ca_file ? strlen(f->ca_file) : 0;
    size_t need = 3 * 17 + 4 + 2 * alen + 1 + nlen + 1 + clen + 1;
    char *key = need <= KEY_STACK ? stack : (*heap = edge_malloc(need));
    char *p = key_int(key, (unsigned)f->slot);
    p = key_str(p, f->tls ? "tls" : "tcp", 3);
    p = key_hex(p, ab, alen);
    p = key_int(p, (unsigned)f->port);
    p = key_str(p, name, nlen);
    p = key_int(p, (unsigned)f->verify);
    if (clen) memcpy(p, f->ca_file, clen);
    p[clen] = '\0';
    return key;
}

static void use_address(edge_fetch *f, const struct sockaddr_storage *addr)
{
    f->addr = *addr;
    char stack[KEY_STACK], *heap = NULL;
    const char *key = pool_key(f, addr, stack, &heap);
    int created;
    f->pool = edge_pools_get(&f->w->upstream_pools, key, f->ka.size > 0 ? &f->ka : NULL, &created);
    free(heap);
    f->pool->busy++;
    if (created) f->pool->idle_gauge = &f->w->counters.upstreams[f->slot].conns_idle;
    if (created && f->tls && !f->verify)
        edge_log(EDGE_LOG_WARN, 0, "edge.fetch: TLS certificates of %s:%d are not verified "
                 "(tls.verify = false)", f->host, f->port);
}

/* ---- names ---- */

/* May run inside edge_resolver_resolve (an IP, a cached name): errors are
 * then reported through the loop by fail_later, never from here. */
static void on_resolved(void *ud, int status, const struct sockaddr_storage *addrs, int n, const char *err)
{
    edge_fetch *f = ud;
    f->query = NULL;
    if (status != EDGE_OK || n < 1) {
        fail_later(f, err);
        return;
    }
    f->n_addrs = n < EDGE_RESOLVE_MAX_ADDRS ? n : EDGE_RESOLVE_MAX_ADDRS;
    free(f->more_addrs);
    f->more_addrs = NULL;
    if (f->n_addrs > 1) {           /* kept apart: most hosts have one, and f stays small */
        f->more_addrs = edge_malloc((size_t)(f->n_addrs - 1) * sizeof(*addrs));
        memcpy(f->more_addrs, addrs + 1, (size_t)(f->n_addrs - 1) * sizeof(*addrs));
    }
    f->addr_i = 0;
    use_address(f, &addrs[0]);
    attempt(f, 0);
}

/* An IP literal, when the worker has no resolver (c-ares did not start). */
static int parse_ip(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return 1;
    }
    return 0;
}

/* The one place edge.fetch turns a host into addresses: the worker's
 * resolver (src/resolver.h: /etc/hosts, DNS, its cache). */
static void resolve(edge_fetch *f)
{
    if (f->w->resolver) {
        edge_resolve_query *q = edge_resolver_resolve_valid(f->w->resolver, f->host, f->port, f->dns_valid,
                                                           on_resolved, f);
        if (q) f->query = q;        /* NULL: on_resolved already ran */
        return;
    }
    struct sockaddr_storage ss;
    char err[320];
    if (parse_ip(f->host, f->port, &ss)) {
        on_resolved(f, EDGE_OK, &ss, 1, NULL);
        return;
    }
    snprintf(err, sizeof(err), "cannot resolve %s: name resolution is not available", f->host);
    on_resolved(f, EDGE_ERROR, NULL, 0, err);
}

/* ---- the entry points ---- */

static char *dup_or_null(const char *s)
{
    return s ? edge_strdup(s) : NULL;
}

edge_fetch *edge_upstream_fetch(edge_worker *w, const edge_fetch_target *t, const edge_fetch_request *r,
                                edge_fetch_cb cb, void *ud)
{
    /* One block for f, its host, label and request bytes: one malloc per
     * fetch instead of four. */
    size_t hlen = strlen(t->host) + 1, llen = strlen(r->label) + 1;
    edge_fetch *f = edge_malloc(sizeof(*f) + hlen + llen + r->wire_len);
    memset(f, 0, sizeof(*f));
    f->w = w;
    f->host = memcpy((char *)(f + 1), t->host, hlen);
    f->label = memcpy(f->host + hlen, r->label, llen);
    f->wire = f->label + llen;
    if (r->wire_len) memcpy(f->wire, r->wire, r->wire_len);
    f->sni = dup_or_null(t->sni);
    f->ca_file = dup_or_null(t->ca_file);
    f->wire_len = r->wire_len;
    f->port = t->port;
    f->tls = t->tls;
    f->verify = t->verify;
    f->ka = t->keepalive;
    f->dns_valid = t->dns_valid;
    f->is_head = r->is_head;
    f->idempotent = r->idempotent;
    f->uncounted = r->uncounted;
    f->stream = r->stream;
    f->upgrade = r->upgrade;
    f->body = r->stream ? r->body : NULL;
    f->body_chunked = r->body_chunked;
    f->retries_left = r->retries;
    f->slot = t->stats_slot >= 0 && t->stats_slot < EDGE_UPSTREAM_STATS_SLOTS ? t->stats_slot : 0;
    f->max_body = r->max_body;
    f->to = r->timeout;
    f->cb = cb;
    f->ud = ud;
    f->started = ev_now(w->loop);
    ev_init(&f->defer, on_defer);
    if (t->addr) on_resolved(f, EDGE_OK, t->addr, 1, NULL);
    else resolve(f);
    return f;
}

void edge_fetch_cancel(edge_fetch *f)
{
    free_fetch(f);      /* closes the connection in use: a half-done exchange is never pooled */
}
