/* Background refreshes of entries in grace (refresh.h). */
#include "refresh.h"
#include "body_pipe.h"
#include "cache.h"
#include "common.h"
#include "dispatch.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

struct edge_refresh {
    edge_request req;
    struct sockaddr_storage peer;     /* the client that found the entry stale */
    ev_timer   start;                 /* runs it on the next loop turn: the client is served first */
    edge_cache_entry *stale;          /* until it starts: the entry and the flight it holds */
    edge_buf   flight_key;
    edge_pipe *draining;              /* a streamed body read for its cache writer only */
    edge_refresh *prev, *next;        /* the worker's refreshes */
};

static void unlink_refresh(edge_refresh *r)
{
    edge_worker *w = r->req.worker;
    if (r->prev) r->prev->next = r->next;
    else w->refreshes = r->next;
    if (r->next) r->next->prev = r->prev;
}

static void free_refresh(edge_refresh *r)
{
    unlink_refresh(r);
    if (r->stale) edge_cache_release(r->stale);
    edge_buf_free(&r->flight_key);
    edge_request_free(&r->req);
    free(r);
}

/* The client's fields that asked about its own copy, or a part: the
 * refresh asks for the whole current response (and the entry's validators,
 * which edge.proxy adds). */
static int client_only(const char *name, size_t n)
{
    return (n >= 3 && memcmp(name, "if-", 3) == 0) || (n == 5 && memcmp(name, "range", 5) == 0);
}

static void copy_request(edge_request *to, const edge_request *from)
{
    edge_request_copy(to, from, client_only);
    if (from->is_head) to->method = edge_request_store(to, "GET", 3);
    to->is_head = 0;
    edge_buf_append(&to->cache_key, from->cache_key.base, from->cache_key.len);
    to->has_cache_key = 1;
}

/* Reads for the cache writer only, and stops the origin as soon as it gave
 * up (too large) or was never attached (not cacheable). */
static void on_drain_ready(void *ud)
{
    edge_refresh *r = ud;
    edge_pipe *p = r->draining;
    size_t n = edge_pipe_readable(p);
    if (n) edge_pipe_consume(p, n);
    if (!p->ended && edge_pipe_wanted(p)) return;
    r->draining = NULL;
    edge_pipe_close(p);
    free_refresh(r);
}

/* The dispatcher is done: the answer is stored (or not). A streamed body
 * still arriving is read for the cache writer that stores it, while it
 * wants it (on_drain_ready). */
static void on_done(edge_request *req)
{
    edge_refresh *r = edge_container_of(req, edge_refresh, req);
    if (req->resp.pipe == NULL) {
        free_refresh(r);
        return;
    }
    r->draining = req->resp.pipe;
    req->resp.pipe = NULL;
    edge_pipe_consumer c = {.ready = on_drain_ready, .ud = r};
    edge_pipe_set_consumer(r->draining, &c);
    on_drain_ready(r);
}

static const edge_request_ops refresh_ops = {.respond = on_done};

/* The next loop turn: the refresh takes over the entry and the flight. */
static void on_start(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    edge_refresh *r = edge_container_of(t, edge_refresh, start);
    edge_cache_entry *stale = r->stale;
    edge_buf key = r->flight_key;       /* the dispatch may finish, and free r, at once */
    r->stale = NULL;
    r->flight_key = (edge_buf){0};
    edge_dispatch_refresh(&r->req, stale, key.base, key.len);
    edge_cache_release(stale);
    edge_buf_free(&key);
}

void edge_refresh_start(edge_request *from, edge_cache_entry *stale, const char *flight_key,
                        size_t flight_klen)
{
    edge_worker *w = from->worker;
    if (w->stopping) {                       /* no new work while draining */
        edge_cache_flight_done(w->cache, flight_key, flight_klen);
        return;
    }
    edge_refresh *r = edge_calloc(1, sizeof(*r));
    edge_request_init(&r->req, &refresh_ops, w, from->conn_id);
    if (from->peer) {
        r->peer = *from->peer;
        r->req.peer = &r->peer;
    }
    copy_request(&r->req, from);
    edge_cache_entry_hold(stale);
    r->stale = stale;
    edge_buf_append(&r->flight_key, flight_key, flight_klen);
    r->next = w->refreshes;
    if (r->next) r->next->prev = r;
    w->refreshes = r;
    ev_timer_init(&r->start, on_start, 0., 0.);
    ev_timer_start(w->loop, &r->start);
}

void edge_refresh_cancel_all(edge_worker *w)
{
    while (w->refreshes) {
        edge_refresh *r = w->refreshes;
        if (ev_is_active(&r->start)) {            /* not started: its flight ends here */
            ev_timer_stop(w->loop, &r->start);
            edge_cache_flight_done(w->cache, r->flight_key.base, r->flight_key.len);
        } else if (r->draining) {
            edge_pipe_close(r->draining);
            r->draining = NULL;
        } else {
            edge_dispatch_cancel(&r->req);
        }
        free_refresh(r);
    }
}
