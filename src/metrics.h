/* Per-worker counters, summed when scraped, rendered in the Prometheus text
 * format. Each counter has one writer (its worker) and is read by the admin
 * thread, so increments are plain relaxed load+store: no lock prefix and no
 * shared cache line on the hot path. */
#ifndef EDGE_METRICS_H
#define EDGE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

struct edge_worker;
struct edge_request;
struct edge_cache;
struct edge_buf;

enum { EDGE_PROTO_H1, EDGE_PROTO_H2, EDGE_PROTO_COUNT };
#define EDGE_DURATION_BUCKETS 12

typedef _Atomic uint64_t edge_counter;

/* Why a stale entry was served; how a conditional refresh ended. */
enum { EDGE_STALE_GRACE, EDGE_STALE_ERROR };
enum { EDGE_REVALIDATION_NOT_MODIFIED, EDGE_REVALIDATION_MODIFIED, EDGE_REVALIDATION_FAILED };

/* Upstream metrics by upstream name. Slot 0 is upstream="" (URL targets);
 * the other slots are claimed by names on their first fetch and keep them
 * for the worker's life (a reload keeps counting under the same name). Past
 * EDGE_UPSTREAM_STATS_SLOTS - 2 names, the rest share upstream="_other", so
 * a script cannot make the label's cardinality unbounded. */
enum { EDGE_UPSTREAM_STATS_SLOTS = 32, EDGE_UPSTREAM_STATS_NAME = 72 };

typedef struct edge_upstream_stats {
    _Atomic int used;               /* set (release) once name is written; never cleared */
    char name[EDGE_UPSTREAM_STATS_NAME];
    edge_counter requests[7];       /* by status class ([1]..[5], [0] other), [6] errors */
    edge_counter connect_failures;
    edge_counter conns_active;      /* gauges: connections carrying a request, idle in a pool */
    edge_counter conns_idle;
    edge_counter health_checks[2];  /* active health checks: [0] failed, [1] passed */
} edge_upstream_stats;

typedef struct edge_counters {
    edge_counter requests[EDGE_PROTO_COUNT][6];    /* by status class: [1] 1xx .. [5] 5xx, [0] other */
    edge_counter duration[EDGE_DURATION_BUCKETS];  /* cumulative at render time */
    edge_counter duration_count;
    edge_counter duration_sum_us;
    edge_counter open_conns[EDGE_PROTO_COUNT];     /* a gauge: incremented and decremented */
    edge_counter tls_handshakes;
    edge_counter tls_resumed;                      /* of those, resumed sessions (ticket or cache) */
    edge_counter tls_failures;
    edge_counter coalesced_waits;
    edge_counter stale_served[2];                  /* EDGE_STALE_GRACE, EDGE_STALE_ERROR */
    edge_counter revalidations[3];                 /* EDGE_REVALIDATION_* */
    edge_counter refreshes;                        /* background refreshes started */
    edge_counter overloaded;                       /* 503 from --max-requests */
    edge_counter lua_errors;
    edge_counter lua_budget_kills;
    edge_counter reloads;
    edge_counter reload_failures;
    edge_upstream_stats upstreams[EDGE_UPSTREAM_STATS_SLOTS];   /* edge.fetch, by upstream */
    edge_counter upstream_conns_opened;
    edge_counter upstream_conns_reused;
    edge_counter upstream_duration[EDGE_DURATION_BUCKETS];
    edge_counter upstream_duration_count;
    edge_counter upstream_duration_sum_us;
} edge_counters;

static inline void edge_counter_add(edge_counter *c, int64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)n,
                          memory_order_relaxed);
}
#define EDGE_COUNT(c) edge_counter_add(&(c), 1)

/* Counts a response (status class, protocol, duration). */
/* The upper bounds of the request-duration histogram's buckets, in seconds. */
extern const double edge_metrics_bucket_bounds[EDGE_DURATION_BUCKETS];

void edge_metrics_response(edge_counters *m, const struct edge_request *req, double now);

/* Counts an upstream exchange's outcome (status 0: an error) under its
 * upstream's slot, and its duration. */
void edge_metrics_upstream(edge_counters *m, int slot, int status, double seconds);

/* The slot of upstream name (NULL or "": slot 0), claimed on first use; the
 * worker's own thread only. */
int edge_metrics_upstream_slot(edge_counters *m, const char *name);

static inline void edge_counter_sub(edge_counter *c, int64_t n)
{
    edge_counter_add(c, -n);
}

/* Renders every worker's counters, the cache's and the in-flight gauge. */
void edge_metrics_render(struct edge_buf *out, struct edge_worker *workers, int n_workers,
                         struct edge_cache *cache);

#endif
