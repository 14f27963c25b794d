/* edge.fetch to a named upstream: tries, each on a server the balancer
 * picks, retried as retries.on says (upstream_named.h). */
#include "upstream_named.h"
#include "body_pipe.h"
#include "common.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct edge_named_fetch {
    edge_worker   *w;
    edge_upstream *u;
    edge_fetch    *f;            /* the try in flight */
    char          *wire, *label, *key;
    size_t         wire_len, key_len, max_body;
    unsigned       is_head, idempotent, stream, upgrade, tries, tries_done, body_chunked;
    edge_pipe     *body;         /* a request body arriving (borrowed), or NULL */
    edge_fetch_timeouts to;
    uint64_t       tried;        /* the servers this request has tried (edge_balancer_pick) */
    int            server;       /* the server of the try in flight */
    int            all_down;     /* a pick found every server still to try down */
    int            slot;         /* /metrics label */
    double         started;
    char           peer[64];
    edge_fetch_cb  cb;
    void          *ud;
};

static void try_next(edge_named_fetch *nf);

static void free_named(edge_named_fetch *nf)
{
    free(nf->wire);
    free(nf->label);
    free(nf->key);
    free(nf);
}

/* The failure bit of a status listed as retryable (retries.on), or 0. */
static unsigned status_failure(int status)
{
    switch (status) {
    case 500: return EDGE_UPSTREAM_FAIL_HTTP_500;
    case 502: return EDGE_UPSTREAM_FAIL_HTTP_502;
    case 503: return EDGE_UPSTREAM_FAIL_HTTP_503;
    case 504: return EDGE_UPSTREAM_FAIL_HTTP_504;
    case 429: return EDGE_UPSTREAM_FAIL_HTTP_429;
    default:  return 0;
    }
}

/* Another try is allowed (retries.on, the method, the cap) and possible (a
 * server this request has not tried is left). */
static int should_retry(edge_named_fetch *nf, unsigned failure)
{
    edge_upstream_def def = nf->u->def;     /* a view: only tries differs; nothing is freed */
    def.retries.tries = nf->tries;
    if (nf->body && nf->body->consumed > 0) return 0;     /* sent bytes cannot be sent again */
    if (!edge_upstream_may_retry(&def, nf->tries_done, failure, nf->is_head || nf->idempotent)) return 0;
    return (size_t)__builtin_popcountll(nf->tried) < edge_balancer_size(nf->u->balancer);
}

/* Frees nf, then reports r (whose resp, if any, stays the caller's). */
static void finish(edge_named_fetch *nf, edge_fetch_result *r)
{
    char peer[sizeof(nf->peer)], err[512] = "";
    memcpy(peer, nf->peer, sizeof(peer));
    if (r->resp == NULL)
        snprintf(err, sizeof(err), "%supstream %s (%u tried): %s", nf->all_down ? "no live server in " : "",
                 nf->u->def.name, nf->tries_done, r->err ? r->err : "failed");
    edge_fetch_result out = *r;
    out.err = err;
    out.peer = peer;
    out.seconds = ev_now(nf->w->loop) - nf->started;
    edge_fetch_cb cb = nf->cb;
    void *ud = nf->ud;
    free_named(nf);
    cb(ud, &out);
}

/* One try ended: tell the balancer, then retry or report. */
static void on_try(void *ud, edge_fetch_result *r)
{
    edge_named_fetch *nf = ud;
    nf->f = NULL;
    const edge_upstream_def *def = &nf->u->def;
    unsigned failure = r->resp ? status_failure(r->resp->status) : r->failure;
    edge_peer_outcome outcome = EDGE_PEER_OK;
    if (failure && edge_upstream_counts_as_failure(def, failure)) outcome = EDGE_PEER_FAILED;
    else if (r->resp == NULL) outcome = EDGE_PEER_ABORTED;   /* a failure retries.on does not list */
    edge_balancer_done(nf->u->balancer, nf->server, outcome, ev_now(nf->w->loop));
    snprintf(nf->peer, sizeof(nf->peer), "%s", r->peer ? r->peer : "");
    if (failure && should_retry(nf, failure)) {
        if (r->resp)
            edge_log(EDGE_LOG_INFO, 0, "edge.fetch: %s got %d from %s, trying another server", nf->label,
                     r->resp->status, nf->peer);
        else
            edge_log(EDGE_LOG_INFO, 0, "edge.fetch: %s failed on %s, trying another server: %s", nf->label,
                     nf->peer, r->err);
        if (r->pipe) edge_pipe_close(r->pipe);   /* a streamed 5xx being retried */
        try_next(nf);           /* r's response, if any, is dropped by upstream_fetch.c */
        return;
    }
    finish(nf, r);
}

static void try_next(edge_named_fetch *nf)
{
    const edge_upstream_def *def = &nf->u->def;
    int all_down = 0;
    int s = edge_balancer_pick(nf->u->balancer, nf->key, nf->key_len, &nf->tried, ev_now(nf->w->loop), &all_down);
    if (s < 0) {                /* should_retry saw a server left: cannot happen; never loop */
        edge_fetch_result r = {.err = "every server was tried", .failure = EDGE_UPSTREAM_FAIL_CONNECT};
        finish(nf, &r);
        return;
    }
    nf->all_down |= all_down;
    nf->server = s;
    nf->tries_done++;
    const edge_upstream_server *srv = &def->servers[s];
    edge_fetch_target t = {
        .host = srv->host, .port = srv->port, .tls = def->tls.enabled, .verify = def->tls.verify,
        .sni = def->tls.sni, .ca_file = def->tls.ca_file,
        .keepalive = {(int)def->keepalive.size, def->keepalive.idle_timeout, (int)def->keepalive.max_requests},
        .stats_slot = nf->slot, .dns_valid = def->dns_valid,
    };
    edge_fetch_request r = {.wire = nf->wire, .wire_len = nf->wire_len, .label = nf->label,
                            .is_head = nf->is_head, .idempotent = nf->idempotent, .retries = 0,
                            .stream = nf->stream, .upgrade = nf->upgrade, .body = nf->body,
                            .body_chunked = nf->body_chunked,
                            .max_body = nf->max_body, .timeout = nf->to};
    nf->f = edge_upstream_fetch(nf->w, &t, &r, on_try, nf);
}

edge_named_fetch *edge_named_fetch_start(edge_worker *w, edge_upstream *u, const edge_named_request *r,
                                         edge_fetch_cb cb, void *ud)
{
    edge_named_fetch *nf = edge_calloc(1, sizeof(*nf));
    nf->w = w;
    nf->u = u;
    nf->wire = edge_malloc(r->wire_len ? r->wire_len : 1);
    memcpy(nf->wire, r->wire, r->wire_len);
    nf->wire_len = r->wire_len;
    nf->label = edge_strdup(r->label);
    if (r->key) {
        nf->key = edge_malloc(r->key_len ? r->key_len : 1);
        memcpy(nf->key, r->key, r->key_len);
        nf->key_len = r->key_len;
    }
    nf->is_head = r->is_head;
    nf->idempotent = r->idempotent;
    nf->stream = r->stream;
    nf->upgrade = r->upgrade;
    nf->body = r->body;
    nf->body_chunked = r->body_chunked;
    nf->tries = r->tries < 1 ? 1 : r->tries > EDGE_UPSTREAM_MAX_TRIES ? EDGE_UPSTREAM_MAX_TRIES : r->tries;
    nf->max_body = r->max_body;
    nf->to = r->timeout;
    /* One VM per worker, so the slot found once holds for the upstream's life. */
    if (u->metrics_slot == 0) u->metrics_slot = edge_metrics_upstream_slot(&w->counters, u->def.name);
    nf->slot = u->metrics_slot;
    nf->started = ev_now(w->loop);
    nf->cb = cb;
    nf->ud = ud;
    try_next(nf);               /* edge_upstream_fetch never reports from inside itself */
    return nf;
}

void edge_named_cancel(edge_named_fetch *nf)
{
    if (nf->f) {
        edge_fetch_cancel(nf->f);
        edge_balancer_done(nf->u->balancer, nf->server, EDGE_PEER_ABORTED, ev_now(nf->w->loop));
    }
    free_named(nf);
}
