/* edge's counters: updated on the request path, each worker its own (no
 * lock, no shared cache line); metrics_render.c sums them for /metrics. */
#include "metrics.h"
#include "common.h"
#include "request.h"

#include <stdio.h>
#include <string.h>

const double edge_metrics_bucket_bounds[EDGE_DURATION_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10
};

static void observe(edge_counter *buckets, edge_counter *count, edge_counter *sum_us, double d)
{
    for (int i = 0; i < EDGE_DURATION_BUCKETS; i++) {
        if (d <= edge_metrics_bucket_bounds[i]) {
            EDGE_COUNT(buckets[i]);
            break;
        }
    }
    EDGE_COUNT(*count);
    edge_counter_add(sum_us, (int64_t)(d * 1e6));
}

void edge_metrics_response(edge_counters *m, const edge_request *req, double now)
{
    int proto = req->version[0] == '2' ? EDGE_PROTO_H2 : EDGE_PROTO_H1;
    int cls = req->resp.status / 100;
    EDGE_COUNT(m->requests[proto][cls >= 1 && cls <= 5 ? cls : 0]);
    double d = req->start > 0 && now > req->start ? now - req->start : 0;
    observe(m->duration, &m->duration_count, &m->duration_sum_us, d);
}


void edge_metrics_upstream(edge_counters *m, int slot, int status, double seconds)
{
    int cls = status / 100;
    EDGE_COUNT(m->upstreams[slot].requests[status == 0 ? 6 : cls >= 1 && cls <= 5 ? cls : 0]);
    observe(m->upstream_duration, &m->upstream_duration_count, &m->upstream_duration_sum_us,
            seconds < 0 ? 0 : seconds);
}

static void claim_slot(edge_upstream_stats *st, const char *name)
{
    snprintf(st->name, sizeof(st->name), "%s", name);
    atomic_store_explicit(&st->used, 1, memory_order_release);   /* the name first, then the flag */
}

int edge_metrics_upstream_slot(edge_counters *m, const char *name)
{
    if (name == NULL || name[0] == '\0') return 0;
    int last = EDGE_UPSTREAM_STATS_SLOTS - 1;
    for (int i = 1; i < last; i++) {
        edge_upstream_stats *st = &m->upstreams[i];
        if (!atomic_load_explicit(&st->used, memory_order_relaxed)) {
            claim_slot(st, name);
            return i;
        }
        if (strncmp(st->name, name, sizeof(st->name) - 1) == 0) return i;
    }
    if (!atomic_load_explicit(&m->upstreams[last].used, memory_order_relaxed)) claim_slot(&m->upstreams[last], "_other");
    return last;
}

