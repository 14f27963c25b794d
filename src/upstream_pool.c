/* Per-worker pools of idle upstream connections. */
#include "upstream_pool.h"
#include "common.h"
#include "metrics.h"
#include "tls.h"
#include "upstream_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POOLS 256     /* keys per worker; the least recently used idle one goes first */

void edge_pools_init(edge_pools *ps)
{
    memset(ps, 0, sizeof(*ps));
}

static void unlink_pool(edge_pools *ps, edge_pool *p)
{
    if (p->prev) p->prev->next = p->next;
    else ps->list = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

static void push_front(edge_pools *ps, edge_pool *p)
{
    p->next = ps->list;
    if (ps->list) ps->list->prev = p;
    ps->list = p;
}

static void free_pool(edge_pools *ps, edge_pool *p)
{
    while (p->idle) edge_upconn_free(edge_pool_take(p));
    if (p->session) SSL_SESSION_free(p->session);
    unlink_pool(ps, p);
    ps->n--;
    free(p->key);
    free(p);
}

/* Over MAX_POOLS: drops the least recently used pool no fetch holds. */
static void evict(edge_pools *ps)
{
    edge_pool *last = ps->list;
    while (last && last->next) last = last->next;
    for (edge_pool *p = last; p && ps->n >= MAX_POOLS; ) {
        edge_pool *prev = p->prev;
        if (p->busy == 0) free_pool(ps, p);
        p = prev;
    }
}

edge_pool *edge_pools_get(edge_pools *ps, const char *key, const edge_keepalive *ka, int *created)
{
    *created = 0;
    for (edge_pool *p = ps->list; p; p = p->next) {
        if (strcmp(p->key, key) != 0) continue;
        unlink_pool(ps, p);
        push_front(ps, p);
        if (ka) p->ka = *ka;
        return p;
    }
    if (ps->n >= MAX_POOLS) evict(ps);
    edge_pool *p = edge_calloc(1, sizeof(*p));
    p->key = edge_strdup(key);
    if (ka) p->ka = *ka;                /* else size 0 until a fetch brings settings */
    push_front(ps, p);
    ps->n++;
    *created = 1;
    return p;
}

edge_upconn *edge_pool_take(edge_pool *p)
{
    edge_upconn *c = p->idle;
    if (c == NULL) return NULL;
    p->idle = c->next;
    c->next = NULL;
    p->n_idle--;
    if (p->idle_gauge) edge_counter_sub(p->idle_gauge, 1);
    return c;
}

/* The origin closed an idle connection, sent stray bytes, or it idled out. */
static void on_idle_closed(edge_upconn *c, void *ud)
{
    edge_pool *p = ud;
    for (edge_upconn **pp = &p->idle; *pp; pp = &(*pp)->next) {
        if (*pp != c) continue;
        *pp = c->next;
        p->n_idle--;
        if (p->idle_gauge) edge_counter_sub(p->idle_gauge, 1);
        break;
    }
    edge_upconn_free(c);
}

void edge_pool_put(edge_pool *p, edge_upconn *c)
{
    if (!edge_upconn_reusable(c) || p->n_idle >= p->ka.size ||
        (p->ka.max_requests > 0 && c->nreq >= (uint32_t)p->ka.max_requests)) {
        edge_upconn_free(c);
        return;
    }
    edge_upconn_park(c, p->ka.idle_timeout, on_idle_closed, p);
    c->next = p->idle;
    p->idle = c;
    p->n_idle++;
    if (p->idle_gauge) edge_counter_add(p->idle_gauge, 1);
}

void edge_pool_keep_session(edge_pool *p, edge_upconn *c)
{
    SSL_SESSION *s = edge_upconn_session(c);
    if (s == NULL) return;
    if (p->session) SSL_SESSION_free(p->session);
    p->session = s;
}

#define SPARE_DATA_MAX    16384     /* larger buffers are freed, not kept */
#define SPARE_BODY_MAX    65536
#define SPARE_HEADERS_MAX 64

static void free_response(edge_response *r)
{
    edge_buf_free(&r->data);
    edge_buf_free(&r->body);
    free(r->headers);
    memset(r, 0, sizeof(*r));
}

void edge_pools_give_response(edge_pools *ps, edge_response *r)
{
    if (ps->n_spare == EDGE_POOLS_SPARE_RESPONSES || r->data.cap > SPARE_DATA_MAX ||
        r->body.cap > SPARE_BODY_MAX || r->cap_headers > SPARE_HEADERS_MAX) {
        free_response(r);
        return;
    }
    edge_response *s = &ps->spare[ps->n_spare++];
    memset(s, 0, sizeof(*s));
    s->data = r->data;
    s->body = r->body;
    s->data.len = s->body.len = 0;
    s->headers = r->headers;
    s->cap_headers = r->cap_headers;
    memset(r, 0, sizeof(*r));
}

void edge_pools_lend_response(edge_pools *ps, edge_response *r)
{
    if (ps->n_spare == 0 || r->data.base || r->body.base || r->headers) return;
    *r = ps->spare[--ps->n_spare];
}

#define MAX_CLIENT_CTXS 16   /* distinct tls.ca_file values per worker: each holds a loaded CA store */

SSL_CTX *edge_pools_client_ctx(edge_pools *ps, const char *ca_file, char *err, size_t errlen)
{
    int n = 0;
    for (edge_client_ctx *x = ps->ctxs; x; x = x->next, n++)
        if ((x->ca_file == NULL && ca_file == NULL) || (x->ca_file && ca_file && strcmp(x->ca_file, ca_file) == 0))
            return x->ctx;
    if (n >= MAX_CLIENT_CTXS) {
        snprintf(err, errlen, "more than %d distinct tls.ca_file values in one worker", MAX_CLIENT_CTXS);
        return NULL;
    }
    SSL_CTX *ctx = edge_tls_client_create(ca_file, err, errlen);
    if (ctx == NULL) return NULL;
    edge_client_ctx *x = edge_calloc(1, sizeof(*x));
    x->ca_file = ca_file ? edge_strdup(ca_file) : NULL;
    x->ctx = ctx;
    x->next = ps->ctxs;
    ps->ctxs = x;
    return ctx;
}

void edge_pools_free(edge_pools *ps)
{
    while (ps->list) free_pool(ps, ps->list);
    while (ps->n_spare > 0) free_response(&ps->spare[--ps->n_spare]);
    while (ps->ctxs) {
        edge_client_ctx *x = ps->ctxs;
        ps->ctxs = x->next;
        SSL_CTX_free(x->ctx);
        free(x->ca_file);
        free(x);
    }
}
