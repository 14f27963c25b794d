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

typedef struct edge_counters {
    edge_counter requests[EDGE_PROTO_COUNT][6];    /* by status class: [1] 1xx .. [5] 5xx, [0] other */
    edge_counter duration[EDGE_DURATION_BUCKETS];  /* cumulative at render time */
    edge_counter duration_count;
    edge_counter duration_sum_us;
    edge_counter open_conns[EDGE_PROTO_COUNT];     /* a gauge: incremented and decremented */
    edge_counter tls_handshakes;
    edge_counter tls_failures;
    edge_counter coalesced_waits;
    edge_counter overloaded;                       /* 503 from --max-requests */
    edge_counter lua_errors;
    edge_counter lua_budget_kills;
    edge_counter reloads;
    edge_counter reload_failures;
    /* edge.fetch: responses by status class ([1]..[5], [0] other), [6] errors */
    edge_counter upstream_requests[7];
    edge_counter upstream_connect_failures;
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
void edge_metrics_response(edge_counters *m, const struct edge_request *req, double now);

/* Counts an upstream exchange's outcome (status 0: an error) and duration. */
void edge_metrics_upstream(edge_counters *m, int status, double seconds);

/* Renders every worker's counters, the cache's and the in-flight gauge. */
void edge_metrics_render(struct edge_buf *out, struct edge_worker *workers, int n_workers,
                         struct edge_cache *cache);

#endif
