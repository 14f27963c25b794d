/* The request's path through the core: limit, hooks, cache, coalescing. */
#include "dispatch.h"
#include "cache.h"
#include "cache_policy.h"
#include "cache_writer.h"
#include "common.h"
#include "compress.h"
#include "log.h"
#include "proxy_request.h"
#include "request.h"
#include "script.h"
#include "worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int inflight;

/* A request waiting for a leader on any worker. The leader's thread only
 * links it and posts msg to the waiting worker; everything else happens on
 * that worker. req is NULL once the request gave up while a wake-up was
 * already on its way; the message then only frees it. */
typedef struct edge_dispatch_waiter {
    edge_cache_waiter base;
    edge_worker_msg   msg;
    edge_worker      *w;
    edge_request     *req;
} edge_dispatch_waiter;

int edge_dispatch_inflight(void)
{
    return atomic_load_explicit(&inflight, memory_order_relaxed);
}

static void release_slot(edge_request *req)
{
    if (!req->dispatch.counted) return;
    req->dispatch.counted = 0;
    atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
}

static const char *key_ptr(const edge_request *req)
{
    return req->cache_key.base ? req->cache_key.base : "";
}

/* The key of the flight the request leads or waits for: its Vary variant's
 * when a marker sent it there, else its cache key. */
static const char *flight_key(const edge_request *req, size_t *klen)
{
    if (req->dispatch.flight_key) {
        *klen = req->dispatch.flight_klen;
        return req->dispatch.flight_key;
    }
    *klen = req->cache_key.len;
    return key_ptr(req);
}

/* Takes ownership of a variant key (empty: none) as the flight's key. */
static void set_flight_key(edge_request *req, edge_buf *variant)
{
    free(req->dispatch.flight_key);
    req->dispatch.flight_key = variant->len ? variant->base : NULL;
    req->dispatch.flight_klen = variant->len;
    if (variant->len == 0) edge_buf_free(variant);
    *variant = (edge_buf){0};
}

static void forget_flight_key(edge_request *req)
{
    edge_buf none = {0};
    set_flight_key(req, &none);
}

/* Wakes the requests that waited for this one's response. */
static void end_flight(edge_request *req)
{
    if (!req->dispatch.leader) return;
    req->dispatch.leader = 0;
    size_t klen;
    const char *key = flight_key(req, &klen);
    edge_cache_flight_done(req->worker->cache, key, klen);
}

/* The end of every dispatched request that gets an answer. */
static void complete(edge_request *req)
{
    edge_script_release(req);
    end_flight(req);
    forget_flight_key(req);
    release_slot(req);
    edge_compress_response(req);
    req->ops->respond(req);
}

/* ---- cache ---- */

/* Finds the request's entry at its key or, when a Vary marker is there, at
 * its variant's key (written to variant). count: a first look, counted as a
 * hit or a miss. */
static edge_cache_entry *find_entry(edge_request *req, int count, edge_buf *variant)
{
    edge_cache *c = req->worker->cache;
    double now = ev_now(req->worker->loop);
    const char *key = key_ptr(req);
    size_t klen = req->cache_key.len;
    edge_cache_entry *e = count ? edge_cache_get(c, key, klen, now) : edge_cache_peek(c, key, klen, now);
    if (e == NULL || !edge_cache_entry_is_marker(e)) return e;
    if (e->n_headers == 1) {
        const edge_header *h = edge_cache_entry_headers(e);
        const char *names = edge_cache_entry_header_data(e) + h->value.off;
        edge_cache_policy_variant_key(req, key, klen, names, h->value.len, variant);
    }
    edge_cache_release(e);
    if (variant->len == 0) return NULL;
    return count ? edge_cache_get(c, variant->base, variant->len, now)
                 : edge_cache_peek(c, variant->base, variant->len, now);
}

/* Answers from the cache when it holds a fresh entry for the request. On a
 * miss, variant holds the key of the variant it missed (or stays empty). */
static int serve_hit(edge_request *req, int count, edge_buf *variant)
{
    edge_cache_entry *e = find_entry(req, count, variant);
    if (e == NULL) return 0;
    edge_compress_from_entry(req, e, ev_now(req->worker->loop));
    char age[24];
    double secs = ev_now(req->worker->loop) - e->stored_at;
    size_t n = edge_format_u64(age, secs > 0 ? (unsigned long long)secs : 0);
    edge_cache_release(e);
    edge_response_add_header(&req->resp, "age", 3, age, n);
    edge_response_add_header(&req->resp, "x-cache", 7, "HIT", 3);
    req->cache_status = "HIT";
    return 1;
}

/* Stores resp under key unless it is larger than --cache-max-object, which
 * is logged (at info: an operator asks why a response is never a HIT). */
static int put(edge_request *req, const char *key, size_t klen, const edge_response *resp, double ttl)
{
    edge_worker *w = req->worker;
    size_t size = edge_cache_object_size(klen, resp), limit = edge_cache_max_object(w->cache);
    if (size > limit) {
        edge_log(EDGE_LOG_INFO, req->conn_id,
                 "request %s: response not cached: %zu bytes, more than --cache-max-object %zu",
                 edge_request_id(req), size, limit);
        return EDGE_ERROR;
    }
    return edge_cache_put(w->cache, key, klen, resp, ev_now(w->loop), ttl);
}

/* Leaves at the request's key a marker naming the fields the response varied by. */
static void put_marker(edge_request *req, const edge_buf *names, double ttl)
{
    edge_response marker = {.status = EDGE_CACHE_MARKER_STATUS};
    edge_response_add_header(&marker, "vary", 4, names->base, names->len);
    put(req, key_ptr(req), req->cache_key.len, &marker, ttl);
    edge_buf_free(&marker.data);
    edge_buf_free(&marker.body);
    free(marker.headers);
}

/* Stores the response at its key, or (Vary) at its variant's key with a marker at its key. */
static void store_entry(edge_request *req, double ttl)
{
    edge_buf names = {0}, variant = {0};
    const char *key = key_ptr(req);
    size_t klen = req->cache_key.len;
    if (edge_cache_policy_vary(&req->resp, &names) > 0) {
        edge_cache_policy_variant_key(req, key, klen, names.base, names.len, &variant);
        if (put(req, variant.base, variant.len, &req->resp, ttl) == EDGE_OK) put_marker(req, &names, ttl);
    } else {
        put(req, key, klen, &req->resp, ttl);
    }
    edge_buf_free(&names);
    edge_buf_free(&variant);
}

/* A streamed (proxied) response is stored by a tap on its pipe once its
 * body is complete; the tap takes over the flight, so waiters wake then. */
static void store_streamed(edge_request *req, double ttl)
{
    edge_worker *w = req->worker;
    edge_buf names = {0}, variant = {0};
    const char *key = key_ptr(req);
    size_t klen = req->cache_key.len;
    edge_cache_writer_args a = {.cache = w->cache, .loop = w->loop, .head = &req->resp, .ttl = ttl,
                                .key = key, .klen = klen, .conn_id = req->conn_id,
                                .request_id = edge_request_id(req)};
    if (edge_cache_policy_vary(&req->resp, &names) > 0) {
        edge_cache_policy_variant_key(req, key, klen, names.base, names.len, &variant);
        a.key = variant.base;
        a.klen = variant.len;
        a.marker_key = key;
        a.marker_klen = klen;
        a.vary_names = &names;
    }
    if (req->dispatch.leader) {
        a.flight_key = flight_key(req, &a.flight_klen);
        req->dispatch.leader = 0;          /* the writer ends the flight */
    }
    edge_cache_writer_attach(req->resp.pipe, &a);
    edge_buf_free(&names);
    edge_buf_free(&variant);
}

static void store(edge_request *req)
{
    edge_response *resp = &req->resp;
    /* A proxied response is stored as the origin says (or the script's ttl),
     * never for --cache-ttl alone: nginx's proxy_cache without proxy_cache_valid. */
    double dflt = resp->pipe ? 0 : req->worker->cfg->cache_ttl;
    if (resp->pipe) {              /* edge's own X-Cache and Age replace an origin's */
        edge_response_remove_header(resp, "x-cache", 7);
        edge_response_remove_header(resp, "age", 3);
    }
    double ttl = edge_cache_policy_ttl(req, resp, dflt);
    if (ttl > 0 && resp->pipe) store_streamed(req, ttl);
    else if (ttl > 0) store_entry(req, ttl);
    edge_response_add_header(resp, "x-cache", 7, "MISS", 4);
    req->cache_status = "MISS";
}

/* ---- computing and coalescing ---- */

static void compute(edge_request *req)
{
    /* The VM that ran cache_key, even if a reload came since (the req userdata lives there). */
    edge_script *s = req->lua.script ? req->lua.script : req->worker->script;
    int rc = edge_script_respond(s, req);
    if (rc != EDGE_AGAIN) edge_dispatch_finish(req, rc);
}

static void lookup_or_compute(edge_request *req);

/* On the waiting worker: the leader finished (or we timed out first). */
static void on_woken(edge_worker_msg *m)
{
    edge_dispatch_waiter *wt = edge_container_of(m, edge_dispatch_waiter, msg);
    edge_request *req = wt->req;
    free(wt);
    if (req == NULL) return;        /* the request gave up meanwhile */
    req->dispatch.waiter = NULL;
    ev_timer_stop(req->worker->loop, &req->dispatch.timer);
    forget_flight_key(req);
    /* A miss now (leader failed, uncacheable, or another variant): compute. */
    req->dispatch.no_coalesce = 1;
    lookup_or_compute(req);
}

/* On the leader's thread: hand the waiter to its own worker's loop. */
static void on_flight_done(edge_cache_waiter *base)
{
    edge_dispatch_waiter *wt = edge_container_of(base, edge_dispatch_waiter, base);
    edge_worker_post(wt->w, &wt->msg);
}

/* Stops waiting for a leader. Returns 1 when the waiter was withdrawn; 0 when
 * the wake-up is already on its way (it will find req NULL and just free). */
static int stop_waiting(edge_request *req)
{
    edge_dispatch_waiter *wt = req->dispatch.waiter;
    if (wt == NULL) return 0;
    req->dispatch.waiter = NULL;
    ev_timer_stop(req->worker->loop, &req->dispatch.timer);
    size_t klen;
    const char *key = flight_key(req, &klen);
    int left = edge_cache_flight_leave(req->worker->cache, key, klen, &wt->base);
    forget_flight_key(req);
    if (left) {
        free(wt);
        return 1;
    }
    wt->req = NULL;
    return 0;
}

static void on_wait_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_request *req = edge_container_of(t, edge_request, dispatch.timer);
    edge_log(EDGE_LOG_INFO, req->conn_id, "request %s: coalesced wait timed out; computing it",
             edge_request_id(req));
    stop_waiting(req);
    req->dispatch.no_coalesce = 1;
    compute(req);
}

/* Joins the flight for the request's key: EDGE_AGAIN when it now waits for
 * another request, EDGE_OK when it leads. */
static int join_flight(edge_request *req)
{
    edge_worker *w = req->worker;
    /* Most joins lead and need no waiter: the worker keeps the unused one. */
    edge_dispatch_waiter *wt = w->spare_waiter ? w->spare_waiter : edge_malloc(sizeof(*wt));
    w->spare_waiter = NULL;
    memset(wt, 0, sizeof(*wt));
    wt->base.wake = on_flight_done;
    wt->msg.run = on_woken;
    wt->w = w;
    wt->req = req;
    size_t klen;
    const char *key = flight_key(req, &klen);
    if (edge_cache_flight_join(w->cache, key, klen, &wt->base) == EDGE_OK) {
        w->spare_waiter = wt;
        req->dispatch.leader = 1;
        return EDGE_OK;
    }
    req->dispatch.waiter = wt;
    EDGE_COUNT(w->counters.coalesced_waits);
    ev_timer_init(&req->dispatch.timer, on_wait_timeout, w->cfg->coalesce_timeout, 0.);
    ev_timer_start(w->loop, &req->dispatch.timer);
    return EDGE_AGAIN;
}

/* Serves a hit; on a miss joins the flight for the key (or the variant) missed. */
static int hit_or_join(edge_request *req)
{
    edge_buf variant = {0};
    if (serve_hit(req, 1, &variant)) {
        edge_buf_free(&variant);
        complete(req);
        return EDGE_DONE;
    }
    set_flight_key(req, &variant);
    /* HEAD is never stored (cache_policy.h), so it leads no flight others would wait on. */
    if (req->dispatch.no_coalesce || req->is_head) return EDGE_OK;
    if (join_flight(req) == EDGE_AGAIN) return EDGE_AGAIN;
    /* Look again: a leader may have stored it between the look and the join. */
    variant = (edge_buf){0};
    int hit = serve_hit(req, 0, &variant);
    edge_buf_free(&variant);
    if (!hit) return EDGE_OK;
    complete(req);
    return EDGE_DONE;
}

static void lookup_or_compute(edge_request *req)
{
    if (req->has_cache_key && hit_or_join(req) != EDGE_OK) return;
    compute(req);
}

/* ---- entry points ---- */

static void respond_overloaded(edge_request *req)
{
    EDGE_COUNT(req->worker->counters.overloaded);
    edge_response_error(&req->resp, 503);
    edge_response_add_header(&req->resp, "retry-after", 11, "1", 1);
    req->ops->respond(req);
}

void edge_dispatch_start(edge_request *req)
{
    edge_worker *w = req->worker;
    edge_worker_assign_id(w, req);
    req->dispatch = (edge_dispatch_ctx){0};
    req->resp.cache_mode = EDGE_CACHE_DEFAULT;
    if (atomic_fetch_add_explicit(&inflight, 1, memory_order_relaxed) >= w->cfg->max_requests) {
        atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
        respond_overloaded(req);
        return;
    }
    req->dispatch.counted = 1;
    if (edge_script_cache_key(w->script, req) != EDGE_OK) {
        edge_dispatch_finish(req, EDGE_ERROR);
        return;
    }
    /* A WebSocket handshake is never answered from, nor stored in, the cache. */
    if (req->has_cache_key && edge_proxy_wants_upgrade(req)) req->has_cache_key = 0;
    lookup_or_compute(req);
}

void edge_dispatch_finish(edge_request *req, int rc)
{
    if (rc != EDGE_OK) edge_response_error(&req->resp, 500);
    else if (req->has_cache_key) store(req);
    complete(req);
}

void edge_dispatch_cancel(edge_request *req)
{
    edge_script_cancel(req);
    stop_waiting(req);
    end_flight(req);     /* waiters compute for themselves */
    forget_flight_key(req);
    release_slot(req);
}
