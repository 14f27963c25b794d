/* The request's path through the core: limit, hooks, cache, coalescing. */
#include "dispatch.h"
#include "cache.h"
#include "cache_policy.h"
#include "cache_writer.h"
#include "common.h"
#include "compress.h"
#include "conditional.h"
#include "log.h"
#include "proxy_request.h"
#include "range.h"
#include "compress.h"
#include "refresh.h"
#include "revalidate.h"
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

static void complete(edge_request *req);

/* ---- cache ---- */

/* An answer that says the origin failed or refused (RFC 5861's errors, and
 * 429): it never replaces a stored entry, and leaves no pass marker. */
static int origin_failed(int status)
{
    return status >= 500 || status == 429;
}

static double now_of(const edge_request *req)
{
    return ev_now(req->worker->loop);
}

/* Finds the request's entry at its key or, when a Vary marker is there, at
 * its variant's key (written to variant). flags: edge_cache_lookup's. */
static edge_cache_entry *find_entry(edge_request *req, unsigned flags, edge_buf *variant)
{
    edge_cache *c = req->worker->cache;
    double now = now_of(req);
    edge_cache_entry *e = edge_cache_lookup(c, key_ptr(req), req->cache_key.len, now, flags);
    if (e == NULL || !edge_cache_entry_is_vary(e)) return e;
    if (e->n_headers == 1) {
        const edge_header *h = edge_cache_entry_headers(e);
        const char *names = edge_cache_entry_header_data(e) + h->value.off;
        edge_cache_policy_variant_key(req, key_ptr(req), req->cache_key.len, names, h->value.len, variant);
    }
    edge_cache_release(e);
    if (variant->len == 0) return NULL;
    e = edge_cache_lookup(c, variant->base, variant->len, now, flags);
    if (e == NULL) req->dispatch.vary_miss = 1;
    return e;
}

/* Holds an expired entry for the request: served if the origin fails
 * (stale-if-error), its validators sent by edge.proxy (revalidation). */
static void hold_stale(edge_request *req, edge_cache_entry *e)
{
    if (req->dispatch.stale) edge_cache_release(req->dispatch.stale);
    req->dispatch.stale = e;
}

static void drop_stale(edge_request *req)
{
    hold_stale(req, NULL);
}

/* Fills the response from an entry (fresh, or stale for outcome). */
static void serve_entry(edge_request *req, const edge_cache_entry *e, int outcome)
{
    edge_response_clear(&req->resp);
    edge_compress_from_entry(req, e, now_of(req));
    char age[24];
    double secs = now_of(req) - e->stored_at;
    size_t n = edge_format_u64(age, secs > 0 ? (unsigned long long)secs : 0);
    edge_response_add_header(&req->resp, "age", 3, age, n);
    req->dispatch.outcome = (unsigned)outcome & 7;
    req->dispatch.hit_ttl = e->expires_at - now_of(req);
}

static void log_stale_served(edge_request *req, const char *why);

/* Serves e, within its keep, for a failed request (stale-if-error). */
static void serve_stale_on_error(edge_request *req, const edge_cache_entry *e, int status, const char *why)
{
    log_stale_served(req, why);
    serve_entry(req, e, EDGE_OUTCOME_STALE_ERROR);
    req->dispatch.fwd_status = status;
    EDGE_COUNT(req->worker->counters.stale_served[EDGE_STALE_ERROR]);
}

/* Stale-while-revalidate: one refresh per key across the workers; the
 * others find the flight taken and only serve. */
static void start_refresh(edge_request *req, edge_cache_entry *e)
{
    if (!edge_request_method_is(req, "GET") && !edge_request_method_is(req, "HEAD")) return;     /* a refresh carries no body: never replay another method */
    size_t klen;
    const char *key = flight_key(req, &klen);
    if (edge_cache_flight_try_lead(req->worker->cache, key, klen) != EDGE_OK) return;
    EDGE_COUNT(req->worker->counters.refreshes);
    edge_refresh_start(req, e, key, klen);
}

/* What a look-up found: a fresh entry or one in grace is served (EDGE_DONE;
 * grace starts the key's refresh); a pass marker or an entry only kept for
 * errors sends the request on to compute (EDGE_OK). Takes e's reference. */
static int use_entry(edge_request *req, edge_cache_entry *e)
{
    if (edge_cache_entry_is_pass(e)) {
        req->dispatch.pass = 1;
        req->dispatch.no_coalesce = 1;      /* hit-for-pass: nobody queues behind it */
        edge_cache_release(e);
        return EDGE_OK;
    }
    switch (edge_cache_entry_state(e, now_of(req))) {
    case EDGE_CACHE_FRESH:
        serve_entry(req, e, EDGE_OUTCOME_HIT);
        break;
    case EDGE_CACHE_GRACE:
        serve_entry(req, e, EDGE_OUTCOME_GRACE);
        EDGE_COUNT(req->worker->counters.stale_served[EDGE_STALE_GRACE]);
        start_refresh(req, e);
        break;
    default:
        if (req->dispatch.woken) {       /* the leader it waited for just failed: no second try */
            serve_stale_on_error(req, e, 0, "the request it waited for failed");
            break;
        }
        hold_stale(req, e);
        return EDGE_OK;
    }
    edge_cache_release(e);
    complete(req);
    return EDGE_DONE;
}

/* Stores resp under key unless it is larger than --cache-max-object, which
 * is logged (at info: an operator asks why a response is never a HIT). */
static int put(edge_request *req, const char *key, size_t klen, const edge_response *resp,
               const edge_cache_life *life)
{
    edge_worker *w = req->worker;
    size_t size = edge_cache_object_size(klen, resp), limit = edge_cache_max_object(w->cache);
    if (size > limit) {
        edge_log(EDGE_LOG_INFO, req->conn_id,
                 "request %s: response not cached: %zu bytes, more than --cache-max-object %zu",
                 edge_request_id(req), size, limit);
        return EDGE_ERROR;
    }
    return edge_cache_put_life(w->cache, key, klen, resp, now_of(req), life);
}

/* Puts a marker (Vary: naming the fields the response varied by; pass:
 * none) at key. */
static void put_marker(edge_request *req, const char *key, size_t klen, int status, const edge_buf *names,
                       const edge_cache_life *life)
{
    edge_response marker = {.status = status};
    if (names) edge_response_add_header(&marker, "vary", 4, names->base, names->len);
    put(req, key, klen, &marker, life);
    edge_buf_free(&marker.data);
    edge_buf_free(&marker.body);
    free(marker.headers);
}

/* Stores the response at its key, or (Vary) at its variant's key with a
 * marker at its key. 1 when stored. */
static int store_entry(edge_request *req, const edge_cache_life *life)
{
    edge_buf names = {0}, variant = {0};
    const char *key = key_ptr(req);
    size_t klen = req->cache_key.len;
    int stored;
    if (edge_cache_policy_vary(&req->resp, &names) > 0) {
        edge_cache_policy_variant_key(req, key, klen, names.base, names.len, &variant);
        stored = put(req, variant.base, variant.len, &req->resp, life) == EDGE_OK;
        if (stored) put_marker(req, key, klen, EDGE_CACHE_MARKER_STATUS, &names, life);
    } else {
        stored = put(req, key, klen, &req->resp, life) == EDGE_OK;
    }
    edge_buf_free(&names);
    edge_buf_free(&variant);
    return stored;
}

/* A streamed (proxied) response is stored by a tap on its pipe once its
 * body is complete; the tap takes over the flight, so waiters wake then. */
static void store_streamed(edge_request *req, const edge_cache_life *life)
{
    edge_worker *w = req->worker;
    edge_buf names = {0}, variant = {0};
    const char *key = key_ptr(req);
    size_t klen = req->cache_key.len;
    edge_cache_writer_args a = {.cache = w->cache, .loop = w->loop, .head = &req->resp, .life = *life,
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

/* Hit-for-pass: an uncacheable answer to a GET leaves a pass marker at its
 * key (its variant's, under Vary: the other variants stay), so later
 * requests for it go to the origin side by side instead of queueing one at
 * a time behind a leader. Not for failures (the origin may be down:
 * coalescing protects it) nor 304 (an answer to one client's copy). */
static void remember_pass(edge_request *req)
{
    double ttl = req->worker->cfg->cache_pass_ttl;
    int status = req->resp.status;
    if (ttl <= 0 || !edge_request_method_is(req, "GET") || status == 304 || origin_failed(status))
        return;
    edge_cache_life life = {ttl, 0, 0};
    size_t klen;
    const char *key = flight_key(req, &klen);
    put_marker(req, key, klen, EDGE_CACHE_PASS_STATUS, NULL, &life);
}

static void store(edge_request *req)
{
    edge_response *resp = &req->resp;
    edge_worker *w = req->worker;
    if (resp->pipe) {              /* edge's own X-Cache and Age replace an origin's */
        edge_response_remove_header(resp, "x-cache", 7);
        edge_response_remove_header(resp, "age", 3);
    }
    req->dispatch.outcome = req->dispatch.stale ? EDGE_OUTCOME_REFRESH : EDGE_OUTCOME_MISS;
    req->dispatch.fwd_status = resp->status;
    if (req->dispatch.stale && resp->status == 304) {
        edge_revalidate_merge(resp, req->dispatch.stale);
        req->dispatch.outcome = EDGE_OUTCOME_REVALIDATED;
        EDGE_COUNT(w->counters.revalidations[EDGE_REVALIDATION_NOT_MODIFIED]);
    } else if (req->dispatch.conditional) {
        EDGE_COUNT(w->counters.revalidations[EDGE_REVALIDATION_MODIFIED]);
    }
    /* A proxied response is stored as the origin says (or the script's ttl),
     * never for --cache-ttl alone: nginx's proxy_cache without proxy_cache_valid. */
    edge_cache_life dflt = {resp->pipe ? 0 : w->cfg->cache_ttl, w->cfg->cache_grace, w->cfg->cache_keep};
    edge_cache_life life;
    if (!edge_cache_policy_life(req, resp, &dflt, &life)) remember_pass(req);
    else if (resp->pipe) store_streamed(req, &life), req->dispatch.stored = 1;
    else req->dispatch.stored = (unsigned)store_entry(req, &life);
}

/* The status the origin gave a failed request: 0 when the script raised or
 * its last origin exchange got no answer (edge.proxy's own 502/504 for a
 * refused connection or a timeout is not the origin's). */
static int origin_status(const edge_request *req, int rc)
{
    if (rc != EDGE_OK || (req->upstream.used && req->upstream.status == 0)) return 0;
    return req->resp.status;
}

static void describe_failure(const edge_request *req, int rc, char *out, size_t n)
{
    if (rc != EDGE_OK) snprintf(out, n, "a script error");
    else if (req->upstream.used && req->upstream.status == 0) snprintf(out, n, "no answer: %d", req->resp.status);
    else snprintf(out, n, "status %d", req->resp.status);
}

/* One stale-if-error line a second per worker; the lines skipped are
 * counted in the next. */
static void log_stale_served(edge_request *req, const char *why)
{
    uint64_t held;
    if (!edge_log_throttle_pass(&req->worker->stale_log, now_of(req), &held)) return;
    char more[64] = "";
    if (held) snprintf(more, sizeof(more), "; %llu more since the last such line", (unsigned long long)held);
    edge_log(EDGE_LOG_WARN, req->conn_id, "request %s: origin failed (%s); served the stale entry "
             "(stale-if-error)%s", edge_request_id(req), why, more);
}

/* The origin (or the script) failed. A held entry within its keep
 * (stale-if-error) answers instead; a background refresh answers nobody
 * and keeps the entry it had. 1 when the failure is dealt with. */
static int stale_on_error(edge_request *req, int rc)
{
    edge_worker *w = req->worker;
    edge_cache_entry *e = req->dispatch.stale;
    char why[48];
    describe_failure(req, rc, why, sizeof(why));
    if (req->dispatch.conditional) EDGE_COUNT(w->counters.revalidations[EDGE_REVALIDATION_FAILED]);
    if (req->dispatch.refresh) {
        edge_log(EDGE_LOG_WARN, req->conn_id,
                 "request %s: background refresh failed (%s); the stale entry stays",
                 edge_request_id(req), why);
        edge_response_clear(&req->resp);
        return 1;
    }
    if (e == NULL || now_of(req) >= e->expires_at + e->keep) return 0;
    serve_stale_on_error(req, e, origin_status(req, rc), why);
    return 1;
}

/* ---- what the response says about the cache ---- */

static const char *x_cache_value(int outcome)
{
    switch (outcome) {
    case EDGE_OUTCOME_HIT: return "HIT";
    case EDGE_OUTCOME_GRACE: case EDGE_OUTCOME_STALE_ERROR: return "STALE";
    case EDGE_OUTCOME_REVALIDATED: return "REVALIDATED";
    default: return "MISS";
    }
}

/* Appends a string to the Cache-Status being written at *p. */
static void put_str(char **p, const char *s)
{
    size_t n = strlen(s);
    memcpy(*p, s, n);
    *p += n;
}

#define CACHE_STATUS_MAX 96      /* the longest value format_cache_status writes, with room */

/* Cache-Status (RFC 9211) for the outcome, into out (CACHE_STATUS_MAX
 * bytes); returns its length. Once per response with a key, so no printf. */
static size_t format_cache_status(const edge_request *req, char *out)
{
    const edge_dispatch_ctx *d = &req->dispatch;
    char *p = out;
    put_str(&p, "edge; ");
    switch (d->outcome) {
    case EDGE_OUTCOME_HIT:
        put_str(&p, "hit; ttl=");      /* a lifetime is at most EDGE_CACHE_LIFE_MAX */
        p += edge_format_u64(p, d->hit_ttl > 0 ? (unsigned long long)d->hit_ttl : 0);
        return (size_t)(p - out);
    case EDGE_OUTCOME_GRACE:
        put_str(&p, "hit; detail=stale");
        return (size_t)(p - out);
    case EDGE_OUTCOME_MISS:
        put_str(&p, d->pass ? "fwd=bypass" : d->vary_miss ? "fwd=vary-miss" : "fwd=miss");
        break;
    default:                           /* an expired entry went to the origin */
        put_str(&p, "fwd=stale; fwd-status=");
        p += edge_format_u64(p, d->fwd_status > 0 ? (unsigned)d->fwd_status : 0);
        break;
    }
    if (d->stored) put_str(&p, "; stored");
    if (d->outcome == EDGE_OUTCOME_STALE_ERROR) put_str(&p, "; detail=stale-if-error");
    else if (d->pass) put_str(&p, "; detail=hit-for-pass");
    return (size_t)(p - out);
}

/* X-Cache and Cache-Status on a response that went through the cache. */
static void label(edge_request *req)
{
    const char *x = x_cache_value(req->dispatch.outcome);
    edge_response_add_header(&req->resp, "x-cache", 7, x, strlen(x));
    char status[CACHE_STATUS_MAX];
    edge_response_add_header(&req->resp, "cache-status", 12, status, format_cache_status(req, status));
    req->cache_status = x;
}

/* What the client gets of a response: the cache's labels, compression,
 * and the client's own conditionals and ranges, which the cache answers
 * (the origin never saw them). The 304 verdict comes first, from the
 * identity; the 304 then carries the compressed response's fields. */
static void finish_response(edge_request *req)
{
    int outcome = req->dispatch.outcome;
    int not_modified = 0;
    if (outcome != EDGE_OUTCOME_NONE) {
        label(req);
        int from_entry = outcome != EDGE_OUTCOME_MISS && outcome != EDGE_OUTCOME_REFRESH;
        not_modified = from_entry && edge_conditional_not_modified(req, &req->resp);
    }
    edge_compress_response(req);
    if (not_modified) edge_conditional_to_304(&req->resp);
    else if (outcome != EDGE_OUTCOME_NONE) edge_range_apply(req, &req->resp);
}

/* The VM the request's Lua runs in: the one that ran its first hook, even
 * if a reload came since (its req userdata lives there). */
static edge_script *script_of(edge_request *req)
{
    return req->lua.script ? req->lua.script : req->worker->script;
}

/* Runs the script's hook, then next(req, rc): now, or when the hook's wait
 * is over; without such a hook, next(req, EDGE_OK) at once. */
static void run_hook(edge_request *req, edge_script *s, enum edge_hook hook, edge_script_done_fn next)
{
    int rc = edge_script_has(s, hook) ? edge_script_run(s, req, hook, next) : EDGE_OK;
    if (rc != EDGE_AGAIN) next(req, rc);
}

/* The response goes out: the request's Lua state is released. */
static void send_response(edge_request *req)
{
    edge_script_release(req);
    req->ops->respond(req);
}

/* on_response is over: an error replaces the response with a 500. */
static void on_response_done(edge_request *req, int rc)
{
    if (rc == EDGE_ERROR) edge_response_error(&req->resp, 500);
    send_response(req);
}

/* The end of every dispatched request that gets an answer. */
static void complete(edge_request *req)
{
    end_flight(req);
    forget_flight_key(req);
    drop_stale(req);
    release_slot(req);
    if (req->dispatch.refresh) {          /* a refresh answers nobody */
        send_response(req);
        return;
    }
    finish_response(req);
    run_hook(req, script_of(req), EDGE_HOOK_ON_RESPONSE, on_response_done);
}

/* ---- computing and coalescing ---- */

static void compute(edge_request *req)
{
    run_hook(req, script_of(req), EDGE_HOOK_RESPOND, edge_dispatch_finish);
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
    req->dispatch.woken = 1;
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
    edge_cache_entry *e = find_entry(req, EDGE_CACHE_COUNT | EDGE_CACHE_STALE, &variant);
    set_flight_key(req, &variant);
    if (e && use_entry(req, e) == EDGE_DONE) return EDGE_DONE;
    /* HEAD is never stored (cache_policy.h), so it leads no flight others would wait on. */
    if (req->dispatch.no_coalesce || req->is_head) return EDGE_OK;
    if (join_flight(req) == EDGE_AGAIN) return EDGE_AGAIN;
    /* Look again: a leader may have stored it between the look and the join. */
    variant = (edge_buf){0};
    e = find_entry(req, 0, &variant);
    edge_buf_free(&variant);
    if (e == NULL) return EDGE_OK;
    return use_entry(req, e);
}

static void lookup_or_compute(edge_request *req)
{
    if (req->has_cache_key && hit_or_join(req) != EDGE_OK) return;
    compute(req);
}

/* ---- entry points ---- */

static void on_cache_key_done(edge_request *req, int rc)
{
    if (rc != EDGE_OK) {
        edge_dispatch_finish(req, EDGE_ERROR);
        return;
    }
    /* A WebSocket handshake is never answered from, nor stored in, the cache. */
    if (req->has_cache_key && edge_proxy_wants_upgrade(req)) req->has_cache_key = 0;
    lookup_or_compute(req);
}

/* access answered (EDGE_DONE: its response, never cached) or failed (500),
 * or the request goes on to its key. */
static void on_access_done(edge_request *req, int rc)
{
    if (rc == EDGE_OK) {
        run_hook(req, script_of(req), EDGE_HOOK_CACHE_KEY, on_cache_key_done);
        return;
    }
    if (rc != EDGE_DONE) edge_response_error(&req->resp, 500);
    complete(req);
}

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
    run_hook(req, w->script, EDGE_HOOK_ACCESS, on_access_done);
}

void edge_dispatch_refresh(edge_request *req, edge_cache_entry *stale, const char *key, size_t klen)
{
    edge_worker_assign_id(req->worker, req);
    req->dispatch = (edge_dispatch_ctx){0};
    req->resp.cache_mode = EDGE_CACHE_DEFAULT;
    req->dispatch.refresh = 1;
    req->dispatch.leader = 1;              /* the caller's flight is now this request's */
    if (klen != req->cache_key.len || memcmp(key, key_ptr(req), klen) != 0) {
        edge_buf variant = {0};
        edge_buf_append(&variant, key, klen);
        set_flight_key(req, &variant);
    }
    edge_cache_entry_hold(stale);
    req->dispatch.stale = stale;
    atomic_fetch_add_explicit(&inflight, 1, memory_order_relaxed);
    req->dispatch.counted = 1;
    compute(req);
}

void edge_dispatch_finish(edge_request *req, int rc)
{
    int failed = rc != EDGE_OK || req->resp.status >= 500;
    if (failed && req->has_cache_key && stale_on_error(req, rc)) {
        complete(req);
        return;
    }
    if (rc != EDGE_OK) {
        edge_response_error(&req->resp, 500);
        if (req->has_cache_key) req->dispatch.outcome = EDGE_OUTCOME_MISS;
    } else if (req->has_cache_key) {
        store(req);
    }
    complete(req);
}

void edge_dispatch_client_gone(edge_request *req)
{
    edge_dispatch_cancel(req);
    edge_response_clear(&req->resp);
    edge_response_set_status(&req->resp, 499);    /* nginx's status for it, as the access log says */
    edge_worker_log_phase(req->worker, req);
}

void edge_dispatch_cancel(edge_request *req)
{
    edge_script_cancel(req);
    stop_waiting(req);
    end_flight(req);     /* waiters compute for themselves */
    forget_flight_key(req);
    drop_stale(req);
    release_slot(req);
}
