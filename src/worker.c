/* Worker threads: accept, connection bookkeeping, graceful stop. */
#include "worker.h"
#include "refresh.h"
#include "common.h"
#include "access_log.h"
#include "cache.h"
#include "conn.h"
#include "h2.h"
#include "log.h"
#include "request.h"
#include "health_check.h"
#include "lua_timer.h"
#include "resolver.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKE 64
#define ACCEPT_BACKOFF   0.1     /* seconds without accepting after EMFILE */

static atomic_uint_fast64_t conn_seq;
static atomic_int open_conns;         /* across workers, for --max-connections */

uint64_t edge_worker_next_conn_id(void)
{
    return (uint64_t)atomic_fetch_add_explicit(&conn_seq, 1, memory_order_relaxed) + 1;
}

/* ---- accepting ---- */

static void set_accepting(edge_worker *w, int on)
{
    for (int i = 0; i < w->n_listen; i++) {
        if (on) ev_io_start(w->loop, &w->accept_io[i]);
        else ev_io_stop(w->loop, &w->accept_io[i]);
    }
}

/* Stops accepting for ACCEPT_BACKOFF seconds (out of descriptors, or at
 * --max-connections); a closing connection of this worker resumes it sooner. */
static void pause_accepting(edge_worker *w)
{
    set_accepting(w, 0);
    w->accept_paused = 1;
    ev_timer_set(&w->accept_backoff, ACCEPT_BACKOFF, 0.);
    ev_timer_start(w->loop, &w->accept_backoff);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    edge_worker *w = io->data;
    for (int i = 0; i < ACCEPTS_PER_WAKE; i++) {
        if (atomic_load_explicit(&open_conns, memory_order_relaxed) >= w->cfg->max_connections) {
            if (ev_now(loop) - w->accept_warned_at >= 5) {
                edge_log(EDGE_LOG_WARN, 0, "%d connections open (--max-connections): pausing accepts",
                         w->cfg->max_connections);
                w->accept_warned_at = ev_now(loop);
            }
            pause_accepting(w);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            edge_conn_accept(w, fd, &peer, w->listen_plain[io - w->accept_io]);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors: stop accepting for a moment instead of spinning. */
            if (ev_now(loop) - w->accept_warned_at >= 5) {    /* one line per 5 s, not per pause */
                edge_log(EDGE_LOG_WARN, 0, "accept: %s; pausing accepts for %.1fs", strerror(errno),
                         ACCEPT_BACKOFF);
                w->accept_warned_at = ev_now(loop);
            }
            pause_accepting(w);
        }
        return;   /* EAGAIN, or an error to retry on the next wake-up */
    }
}

static void resume_accepting(edge_worker *w)
{
    ev_timer_stop(w->loop, &w->accept_backoff);
    w->accept_paused = 0;
    if (!w->stopping) set_accepting(w, 1);
}

static void on_accept_backoff(struct ev_loop *loop, ev_timer *t, int revents)
{
    resume_accepting(t->data);
}

/* ---- connections ---- */

void edge_worker_add_conn(edge_worker *w, edge_conn *c)
{
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    atomic_fetch_add_explicit(&open_conns, 1, memory_order_relaxed);
}

static void on_reap(struct ev_loop *loop, ev_prepare *p, int revents)
{
    edge_worker *w = p->data;
    while (w->closed) {
        edge_conn *c = w->closed;
        w->closed = c->next;
        edge_conn_free(c);
    }
    /* A drain keeps the reaper armed: it is what sees the last connection
     * and the last task (a timer's run, a log hook) end. */
    if (!w->stopping) ev_prepare_stop(loop, p);
    else if (w->n_conns == 0 && w->n_tasks == 0) ev_break(loop, EVBREAK_ALL);
}

void edge_worker_retire_conn(edge_worker *w, edge_conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->n_conns--;
    atomic_fetch_sub_explicit(&open_conns, 1, memory_order_relaxed);
    if (w->accept_paused && !w->stopping &&
        atomic_load_explicit(&open_conns, memory_order_relaxed) < w->cfg->max_connections)
        resume_accepting(w);
    c->prev = NULL;
    c->next = w->closed;
    w->closed = c;
    ev_prepare_start(w->loop, &w->reaper);
}

/* ---- messages from other threads ---- */

void edge_worker_post(edge_worker *w, edge_worker_msg *m)
{
    pthread_mutex_lock(&w->inbox_lock);
    m->next = w->inbox;
    w->inbox = m;
    pthread_mutex_unlock(&w->inbox_lock);
    ev_async_send(w->loop, &w->inbox_async);
}

static void run_inbox(edge_worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    edge_worker_msg *m = w->inbox, *next;
    w->inbox = NULL;
    pthread_mutex_unlock(&w->inbox_lock);
    for (; m; m = next) {
        next = m->next;
        m->run(m);
    }
}

static void on_inbox(struct ev_loop *loop, ev_async *a, int revents)
{
    run_inbox(a->data);
}

#define SWEEP_BUCKETS 4096   /* per shard and second: 65,536 buckets a second in all */

/* Expired entries are never served, but until a sweep they hold memory and
 * count in the cache gauges. One worker sweeps for all. */
static void on_cache_sweep(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_worker *w = t->data;
    edge_cache_sweep(w->cache, ev_now(loop), SWEEP_BUCKETS);
}

#define IDLE_TRIM_SECONDS 1.0   /* a connection idle for 1-2 s gives back its buffers */

static void on_idle_trim(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_worker *w = t->data;
    for (edge_conn *c = w->conns; c; c = c->next) edge_conn_trim(c);
}

/* ---- reloading ---- */

/* A reload is counted once, not once per worker: the main thread numbers
 * each SIGHUP (a generation), and the first worker that fails to load a
 * generation counts that generation's failure. */
static atomic_uint_fast64_t reload_generation;      /* reloads asked for */
static atomic_uint_fast64_t reload_failed_upto;     /* the latest generation counted as failed */
static atomic_uint_fast64_t reload_failures;        /* generations some worker failed to load */

static void count_reload_failure(uint64_t gen)
{
    uint_fast64_t seen = atomic_load(&reload_failed_upto);
    while (seen < gen) {
        if (atomic_compare_exchange_weak(&reload_failed_upto, &seen, gen)) {
            atomic_fetch_add(&reload_failures, 1);
            return;
        }
    }
}

void edge_worker_reload_stats(uint64_t *reloads, uint64_t *failures)
{
    *reloads = atomic_load(&reload_generation);
    *failures = atomic_load(&reload_failures);
}

/* Certificates reach the workers without a lock or an atomic per accept:
 * the main thread builds the new set, parks a reference in each worker's
 * next_ssl_ctx (an atomic exchange: a reference parked earlier and not yet
 * taken is released by whoever swaps it out, never used) and wakes the
 * worker with its reload ev_async. The worker swaps its own ssl_ctx here,
 * on its thread, so tls_new() reads a plain pointer. The old context lives
 * on as long as an SSL made from it does (each holds a reference), and its
 * set with it (tls_certs.h). */
static void take_new_certs(edge_worker *w)
{
    SSL_CTX *ctx = atomic_exchange(&w->next_ssl_ctx, NULL);
    if (ctx == NULL) return;
    SSL_CTX_free(w->ssl_ctx);
    w->ssl_ctx = ctx;
}

void edge_worker_set_ssl_ctx(edge_worker *w, SSL_CTX *ctx)
{
    SSL_CTX_up_ref(ctx);
    SSL_CTX_free(atomic_exchange(&w->next_ssl_ctx, ctx));    /* NULL-safe */
}

/* New requests go to the new VM; requests in flight finish on the old one,
 * which is closed when the last of them releases it. */
static void on_reload(struct ev_loop *loop, ev_async *a, int revents)
{
    edge_worker *w = a->data;
    take_new_certs(w);                                /* whether or not the script loads */
    uint64_t gen = atomic_load(&reload_generation);   /* SIGHUPs sent before the wake-up coalesce */
    char err[1024];
    edge_script *s = edge_calloc(1, sizeof(*s));
    if (edge_script_open(s, w->cfg->script, w->cfg->lua_budget, loop, w->id, w->cache, w->cfg->cache_ttl,
                         err, sizeof(err)) != EDGE_OK) {
        free(s);
        EDGE_COUNT(w->counters.reload_failures);
        count_reload_failure(gen);
        edge_log(EDGE_LOG_ERR, 0, "reload failed, still serving the previous script: %s", err);
        return;
    }
    edge_script *old = w->script;
    w->script = s;
    edge_lua_timer_start(s, w);
    edge_lua_timer_expire_all(old, "script reloaded");    /* premature runs, before the VM retires */
    if (w->n_tasks > 0) {                                 /* the old VM's tasks: --drain-timeout to end */
        ev_timer_stop(loop, &w->retired_tasks);
        ev_timer_set(&w->retired_tasks, w->cfg->drain_timeout, 0.);
        ev_timer_start(loop, &w->retired_tasks);
    }
    if (w->stopping) edge_lua_timer_expire_all(s, "worker exiting");
    edge_script_retire(old);
    w->script->counters = &w->counters;
    if (!w->stopping) s->health = edge_health_start(w, s->L);
    EDGE_COUNT(w->counters.reloads);
    edge_log(EDGE_LOG_NOTICE, 0, "script %s reloaded", w->cfg->script);
}

static void on_retired_tasks(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_script_cancel_retired_tasks(t->data);
}

/* ---- stopping ---- */

static void close_all(edge_worker *w)
{
    while (w->conns) edge_conn_close(w->conns);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    edge_worker *w = t->data;
    if (w->n_conns) edge_log(EDGE_LOG_WARN, 0, "drain timeout: closing %d connections", w->n_conns);
    if (w->n_tasks) edge_log(EDGE_LOG_WARN, 0, "drain timeout: cancelling %d tasks (timers, log hooks)", w->n_tasks);
    close_all(w);
    ev_break(loop, EVBREAK_ALL);
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    edge_worker *w = a->data;
    if (w->stopping) return;
    w->stopping = 1;
    edge_script_stop_checks(w->script);     /* a drain sends no more checks */
    set_accepting(w, 0);
    ev_timer_stop(loop, &w->accept_backoff);
    for (int i = 0; i < w->n_listen; i++) {
        close(w->listen_fds[i]);
        w->listen_fds[i] = -1;
    }
    /* Each protocol closes idle connections now and busy ones after their
     * current response. */
    edge_conn *next;
    for (edge_conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->state == EDGE_CONN_OPEN && c->proto && c->proto->on_shutdown) c->proto->on_shutdown(c);
        else if (c->state == EDGE_CONN_HANDSHAKE) edge_conn_close(c);
    }
    /* Pending timers run now, premature; the drain waits for them too. */
    edge_lua_timer_expire_all(w->script, "worker exiting");
    ev_timer_set(&w->drain_timer, w->cfg->drain_timeout, 0.);
    ev_timer_start(loop, &w->drain_timer);
    ev_prepare_start(loop, &w->reaper);   /* checks for "no connections or tasks left" */
}

void edge_workers_reload(edge_worker *workers, int n)
{
    atomic_fetch_add(&reload_generation, 1);
    for (int i = 0; i < n; i++) ev_async_send(workers[i].loop, &workers[i].reload_async);
}

void edge_worker_request_stop(edge_worker *w)
{
    ev_async_send(w->loop, &w->stop_async);
}

/* ---- lifecycle ---- */

int edge_worker_init(edge_worker *w, int id, const edge_config *cfg, SSL_CTX *ssl_ctx,
                     struct edge_cache *cache, const int *fds, const unsigned char *plain, int n_fds,
                     char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->cfg = cfg;
    if (ssl_ctx) SSL_CTX_up_ref(ssl_ctx);   /* the worker's own: a reload may replace it */
    w->ssl_ctx = ssl_ctx;
    atomic_init(&w->next_ssl_ctx, NULL);
    w->cache = cache;
    pthread_mutex_init(&w->inbox_lock, NULL);
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL) {
        snprintf(err, errlen, "cannot create an event loop");
        return EDGE_ERROR;
    }
    w->script = edge_calloc(1, sizeof(*w->script));
    if (edge_script_open(w->script, cfg->script, cfg->lua_budget, w->loop, id, cache, cfg->cache_ttl,
                         err, errlen) != EDGE_OK) {
        free(w->script);
        w->script = NULL;
        ev_loop_destroy(w->loop);
        w->loop = NULL;
        return EDGE_ERROR;
    }
    w->script->counters = &w->counters;
    edge_pools_init(&w->upstream_pools);
    char why[256];
    w->resolver = edge_resolver_new(w->loop, NULL, why, sizeof(why));
    if (w->resolver == NULL)   /* edge.fetch then reaches IP addresses only */
        edge_log(EDGE_LOG_WARN, 0, "worker %d: no name resolution for upstreams: %s", id, why);
    w->n_listen = n_fds;
    for (int i = 0; i < n_fds; i++) {
        w->listen_fds[i] = fds[i];
        w->listen_plain[i] = plain[i];
        ev_io_init(&w->accept_io[i], on_accept, fds[i], EV_READ);
        w->accept_io[i].data = w;
    }
    ev_init(&w->accept_backoff, on_accept_backoff);
    w->accept_backoff.data = w;
    ev_async_init(&w->stop_async, on_stop);
    w->stop_async.data = w;
    ev_init(&w->drain_timer, on_drain_timeout);
    w->drain_timer.data = w;
    ev_init(&w->retired_tasks, on_retired_tasks);
    w->retired_tasks.data = w;
    ev_prepare_init(&w->reaper, on_reap);
    w->reaper.data = w;
    ev_async_start(w->loop, &w->stop_async);
    ev_async_init(&w->reload_async, on_reload);
    w->reload_async.data = w;
    ev_async_start(w->loop, &w->reload_async);
    ev_async_init(&w->inbox_async, on_inbox);
    w->inbox_async.data = w;
    ev_async_start(w->loop, &w->inbox_async);
    set_accepting(w, 1);
    ev_timer_init(&w->idle_trim, on_idle_trim, IDLE_TRIM_SECONDS, IDLE_TRIM_SECONDS);
    w->idle_trim.data = w;
    ev_timer_start(w->loop, &w->idle_trim);
    if (id == 0) {
        ev_timer_init(&w->cache_sweep, on_cache_sweep, 1., 1.);
        w->cache_sweep.data = w;
        ev_timer_start(w->loop, &w->cache_sweep);
    }
    return EDGE_OK;
}

static void *worker_main(void *arg)
{
    edge_worker *w = arg;
    edge_log_worker = w->id;
    w->script->health = edge_health_start(w, w->script->L);   /* the resolver and pools exist now */
    edge_lua_timer_start(w->script, w);     /* timers the script made while loading */
    ev_run(w->loop, 0);
    edge_script_stop_checks(w->script);     /* before the pools go: a check holds one */
    edge_refresh_cancel_all(w);             /* likewise: a refresh may hold an origin connection */
    close_all(w);
    on_reap(w->loop, &w->reaper, 0);
    ev_timer_stop(w->loop, &w->retired_tasks);
    edge_script_cancel_tasks(w);            /* timers and log phases still waiting, the log
                                             * phases of the requests close_all cancelled too */
    edge_pools_free(&w->upstream_pools);    /* after close_all: no fetch is in flight now */
    if (w->resolver) edge_resolver_free(w->resolver);
    w->resolver = NULL;
    ev_timer_stop(w->loop, &w->access_timer);
    edge_access_log_flush(w);
    return NULL;
}

int edge_worker_start(edge_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? EDGE_OK : EDGE_ERROR;
}

void edge_worker_join(edge_worker *w)
{
    pthread_join(w->thread, NULL);
}

void edge_worker_free(edge_worker *w)
{
    run_inbox(w);          /* wake-ups that arrived after the loop ended: they only free */
    pthread_mutex_destroy(&w->inbox_lock);
    for (int i = 0; i < w->n_listen; i++)
        if (w->listen_fds[i] >= 0) close(w->listen_fds[i]);
    edge_script_retire(w->script);
    edge_pools_free(&w->upstream_pools);    /* empty unless the worker never ran */
    if (w->resolver) edge_resolver_free(w->resolver);
    edge_buf_free(&w->access_buf);
    free(w->spare_waiter);
    edge_h2_free_spares(w);
    edge_slab_drain(&w->slab);              /* after the last nghttp2 session */
    SSL_CTX_free(w->ssl_ctx);               /* NULL-safe; the set goes with the last reference */
    SSL_CTX_free(atomic_exchange(&w->next_ssl_ctx, NULL));
    ev_loop_destroy(w->loop);
}

/* A request id a proxy may hand us: 1 to 64 of [A-Za-z0-9._:-], so it is
 * safe in a header, a log line and a JSON string as it is. */
static int valid_request_id(const char *p, size_t n)
{
    if (n == 0 || n > EDGE_REQUEST_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-') return 0;
    }
    return 1;
}

/* Keeps the X-Request-Id of a request that came through a trusted proxy, so
 * one id follows the request across the proxies' logs and ours. */
static void adopt_request_id(edge_worker *w, edge_request *req)
{
    if (w->cfg->trusted_proxies.n == 0 || req->peer == NULL ||
        !edge_cidr_list_match(&w->cfg->trusted_proxies, req->peer))
        return;
    const edge_header *h = edge_request_header(req, "x-request-id", 12);
    if (h == NULL || !valid_request_id(edge_request_ptr(req, h->value), h->value.len)) return;
    memcpy(req->id, edge_request_ptr(req, h->value), h->value.len);
    req->id[h->value.len] = '\0';
}

void edge_worker_assign_id(edge_worker *w, edge_request *req)
{
    req->id_num = ((uint64_t)w->id << 48) | ++w->request_seq;
    req->id[0] = '\0';
    adopt_request_id(w, req);
}

/* Log phases are tasks that outlive their requests: a log hook slower than
 * the traffic would pile them up without end. Past --max-requests tasks on
 * the worker a response's log phase is skipped, said once a second. */
void edge_worker_log_phase(edge_worker *w, edge_request *req)
{
    if (!edge_script_has(w->script, EDGE_HOOK_LOG)) return;
    if (w->n_tasks < w->cfg->max_requests) {
        edge_script_log(w->script, req);
        return;
    }
    uint64_t held;
    if (!edge_log_throttle_pass(&w->log_phase_log, ev_now(w->loop), &held)) return;
    edge_log(EDGE_LOG_WARN, req->conn_id, "log phase skipped for %llu responses: %d tasks still run "
             "(--max-requests); the script's log hook is slower than the traffic",
             (unsigned long long)held + 1, w->n_tasks);
}

void edge_worker_on_response(edge_worker *w, edge_request *req)
{
    if (req->id_num == 0) edge_worker_assign_id(w, req);   /* rejected before dispatch: no hook ran */
    else edge_worker_log_phase(w, req);
    edge_metrics_response(&w->counters, req, ev_now(w->loop));
}

const char *edge_worker_http_date(edge_worker *w)
{
    ev_tstamp now = ev_now(w->loop);
    ev_tstamp second = (ev_tstamp)(time_t)now;
    if (second != w->date_second) {
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_second = second;
    }
    return w->date;
}
