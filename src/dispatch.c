/* The request's path through the core: limit, hooks, cache, coalescing. */
#include "dispatch.h"
#include "cache.h"
#include "cache_policy.h"
#include "common.h"
#include "log.h"
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

/* Wakes the requests that waited for this one's response. */
static void end_flight(edge_request *req)
{
    if (!req->dispatch.leader) return;
    req->dispatch.leader = 0;
    edge_cache_flight_done(req->worker->cache, key_ptr(req), req->cache_key.len);
}

/* The end of every dispatched request that gets an answer. */
static void complete(edge_request *req)
{
    edge_script_release(req);
    end_flight(req);
    release_slot(req);
    req->ops->respond(req);
}

/* ---- cache ---- */

/* Answers from the cache when it holds a fresh entry (count: a first look,
 * counted as a hit or a miss). */
static int serve_hit(edge_request *req, int count)
{
    edge_worker *w = req->worker;
    double now = ev_now(w->loop);
    const char *key = key_ptr(req);
    size_t klen = req->cache_key.len;
    edge_cache_entry *e = count ? edge_cache_get(w->cache, key, klen, now) : edge_cache_peek(w->cache, key, klen, now);
    if (e == NULL) return 0;
    edge_cache_entry_to_response(e, &req->resp);
    char age[24];
    double secs = now - e->stored_at;
    size_t n = edge_format_u64(age, secs > 0 ? (unsigned long long)secs : 0);
    edge_cache_release(e);
    edge_response_add_header(&req->resp, "age", 3, age, n);
    edge_response_add_header(&req->resp, "x-cache", 7, "HIT", 3);
    req->cache_status = "HIT";
    return 1;
}

static void store(edge_request *req)
{
    edge_worker *w = req->worker;
    double ttl = edge_cache_policy_ttl(&req->resp, w->cfg->cache_ttl);
    if (ttl > 0)
        edge_cache_put(w->cache, key_ptr(req), req->cache_key.len, &req->resp, ev_now(w->loop), ttl);
    edge_response_add_header(&req->resp, "x-cache", 7, "MISS", 4);
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
    req->dispatch.no_coalesce = 1;  /* a miss now (leader failed, or uncacheable): compute */
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
    if (edge_cache_flight_leave(req->worker->cache, key_ptr(req), req->cache_key.len, &wt->base)) {
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
    if (edge_cache_flight_join(w->cache, key_ptr(req), req->cache_key.len, &wt->base) == EDGE_OK) {
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

static void lookup_or_compute(edge_request *req)
{
    if (req->has_cache_key) {
        if (serve_hit(req, 1)) {
            complete(req);
            return;
        }
        /* Look again after joining: the leader may have stored it meanwhile. */
        if (!req->dispatch.no_coalesce && join_flight(req) == EDGE_AGAIN) return;
        if (req->dispatch.leader && serve_hit(req, 0)) {
            complete(req);
            return;
        }
    }
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
    release_slot(req);
}
