/* A worker thread: its own ev_loop, listening sockets, Lua VM and
 * connections. Nothing a worker owns is touched by another thread; the main
 * thread only signals it through ev_async. */
#ifndef EDGE_WORKER_H
#define EDGE_WORKER_H

#include <ev.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "config.h"

#define EDGE_MAX_LISTENERS (EDGE_MAX_LISTEN * 2)   /* TLS + cleartext */
#include "log.h"
#include "metrics.h"
#include "script.h"
#include "slab.h"
#include "upstream_pool.h"

struct edge_conn;
struct edge_cache;

/* A message to a worker from any thread, run on the worker's own loop. */
typedef struct edge_worker_msg {
    struct edge_worker_msg *next;
    void (*run)(struct edge_worker_msg *m);
} edge_worker_msg;

typedef struct edge_worker {
    int        id;
    pthread_t  thread;
    struct ev_loop *loop;
    const edge_config *cfg;
    SSL_CTX   *ssl_ctx;           /* new connections' (one reference, the worker's); NULL: no TLS */
    _Atomic(SSL_CTX *) next_ssl_ctx;  /* a SIGHUP's certificates, not yet taken (edge_worker_set_ssl_ctx) */
    struct edge_cache *cache;     /* shared by all workers */
    edge_script *script;          /* new requests run here; a reload replaces it */
    int        n_listen;
    int        listen_fds[EDGE_MAX_LISTENERS];
    unsigned char listen_plain[EDGE_MAX_LISTENERS];   /* 1: cleartext listener */
    ev_io      accept_io[EDGE_MAX_LISTENERS];
    ev_timer   accept_backoff;    /* re-enables accept after EMFILE/ENFILE */
    ev_tstamp  accept_warned_at;  /* when the EMFILE warning was last logged */
    int        accept_paused;
    ev_async   stop_async;        /* the main thread asks for a graceful stop */
    ev_async   reload_async;      /* the main thread asks for a script reload (SIGHUP) */
    ev_timer   drain_timer;       /* bounds the graceful stop */
    ev_prepare reaper;            /* frees closed connections before each poll */
    ev_timer   idle_trim;         /* idle connections give back their buffers */
    ev_async   inbox_async;       /* messages from other threads arrived */
    pthread_mutex_t inbox_lock;
    edge_worker_msg *inbox;
    struct edge_conn *conns;      /* open connections */
    struct edge_conn *closed;     /* closed, waiting for the reaper */
    int        n_conns;
    int        stopping;
    uint64_t   request_seq;
    edge_counters counters;
    edge_pools upstream_pools;    /* edge.fetch's idle connections and client TLS contexts */
    struct edge_resolver *resolver;   /* upstream names (c-ares); NULL if c-ares could not start */
    struct edge_dispatch_waiter *spare_waiter;   /* dispatch.c's, reused across misses */
    struct edge_h2_stream *spare_h2_streams;     /* h2.c's, reused across streams */
    edge_slab  slab;              /* nghttp2's small blocks (slab.h) */
    int        n_spare_h2_streams;
    struct edge_refresh *refreshes;   /* background refreshes running (refresh.h) */
    struct edge_request *tasks;   /* Lua tasks running: timers, the log phase (script.h) */
    int        n_tasks;           /* their number: a drain waits for them */
    ev_timer   retired_tasks;     /* a reload's old VM: its tasks' deadline (--drain-timeout) */
    edge_log_throttle log_phase_log;  /* "log phase skipped" lines, one a second */
    edge_log_throttle stale_log;  /* stale-if-error lines, one a second */
    char       date[40];          /* the cached Date header value */
    ev_tstamp  date_second;
    edge_buf   access_buf;        /* access log lines not yet written */
    ev_timer   access_timer;      /* writes them within a second */
    ev_timer   cache_sweep;       /* worker 0: drops expired cache entries, every second */
    char       scratch[16384];    /* read buffer shared by the worker's connections */
} edge_worker;

/* Creates the worker's loop, loads its script and watches its listening fds.
 * EDGE_OK, or EDGE_ERROR with a message in err. */
int edge_worker_init(edge_worker *w, int id, const edge_config *cfg, SSL_CTX *ssl_ctx,
                     struct edge_cache *cache, const int *fds, const unsigned char *plain, int n_fds,
                     char *err, size_t errlen);
/* Runs the worker on a new thread. */
int edge_worker_start(edge_worker *w);
/* From the main thread: w's new connections use ctx (a SIGHUP's certificates)
 * from w's next reload wake-up on (edge_workers_reload). The worker takes a
 * reference of its own; connections in progress keep the context they have. */
void edge_worker_set_ssl_ctx(edge_worker *w, SSL_CTX *ctx);
/* From the main thread: one reload of the script in every worker (a worker
 * that fails keeps its old script, logged). Counted once in the stats. */
void edge_workers_reload(edge_worker *workers, int n);
/* Reloads asked for, and those that at least one worker failed to load. */
void edge_worker_reload_stats(uint64_t *reloads, uint64_t *failures);
/* From any thread: stop accepting, finish in-flight requests (bounded by
 * --drain-timeout), then leave the loop. */
void edge_worker_request_stop(edge_worker *w);
/* Waits for the thread to end. */
void edge_worker_join(edge_worker *w);
/* Frees what the worker owns; every worker must have been joined (another
 * worker could still post to this one). */
void edge_worker_free(edge_worker *w);
/* From any thread: runs m->run(m) on w's loop, soon. */
void edge_worker_post(edge_worker *w, edge_worker_msg *m);

/* A process-wide unique connection id (for log lines). */
uint64_t edge_worker_next_conn_id(void);
/* Connection bookkeeping for conn.c. */
void edge_worker_add_conn(edge_worker *w, struct edge_conn *c);
void edge_worker_retire_conn(edge_worker *w, struct edge_conn *c);
/* Gives req the next request id of this worker (unique per process). */
void edge_worker_assign_id(edge_worker *w, struct edge_request *req);
/* A response is about to be encoded: count it, and give it a request id if
 * it was rejected before dispatch. The protocol writes the access log line
 * once the response's last byte was written. */
void edge_worker_on_response(edge_worker *w, struct edge_request *req);
/* Starts the script's log phase for req, if the script has one (a task). */
void edge_worker_log_phase(edge_worker *w, struct edge_request *req);
/* The current HTTP Date value ("Thu, 26 Nov 2026 06:30:00 GMT"). */
const char *edge_worker_http_date(edge_worker *w);

#endif
