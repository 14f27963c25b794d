/* Prometheus text exposition of edge's counters (metrics.c), summed over
 * the workers when /metrics is scraped. */
#include "metrics.h"
#include "buf.h"
#include "cache.h"
#include "common.h"
#include "dispatch.h"
#include "health_check.h"
#include "request.h"
#include "shared_dict.h"
#include "worker.h"

#include <stdio.h>
#include <string.h>

static const char *const proto_names[EDGE_PROTO_COUNT] = {"http/1.1", "h2"};
static const char *const class_names[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

static uint64_t load(const edge_counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Sums one counter (at byte offset off in edge_counters) over the workers. */
static uint64_t sum(edge_worker *w, int n, size_t off)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += load((const edge_counter *)((const char *)&w[i].counters + off));
    return total;
}
#define SUM(field) sum(workers, n_workers, offsetof(edge_counters, field))

static void metric(edge_buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    edge_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
                    (unsigned long long)v);
}

static void render_histogram(edge_buf *b, const char *name, edge_worker *workers, int n_workers,
                             size_t buckets_off, size_t count_off, size_t sum_off)
{
    uint64_t cumulative = 0;
    for (int i = 0; i < EDGE_DURATION_BUCKETS; i++) {
        cumulative += sum(workers, n_workers, buckets_off + (size_t)i * sizeof(edge_counter));
        edge_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, edge_metrics_bucket_bounds[i], (unsigned long long)cumulative);
    }
    uint64_t count = sum(workers, n_workers, count_off);
    edge_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
    edge_buf_printf(b, "%s_sum %.6f\n", name, (double)sum(workers, n_workers, sum_off) / 1e6);
    edge_buf_printf(b, "%s_count %llu\n", name, (unsigned long long)count);
}

static void render_requests(edge_buf *b, edge_worker *workers, int n_workers)
{
    edge_buf_append_str(b, "# HELP edge_requests_total Responses sent, by protocol and status class.\n"
                           "# TYPE edge_requests_total counter\n");
    for (int p = 0; p < EDGE_PROTO_COUNT; p++)
        for (int c = 0; c < 6; c++)
            edge_buf_printf(b, "edge_requests_total{protocol=\"%s\",status=\"%s\"} %llu\n", proto_names[p],
                            class_names[c], (unsigned long long)SUM(requests[p][c]));

    edge_buf_append_str(b, "# HELP edge_request_duration_seconds Time from the first byte of a request "
                           "to its response.\n# TYPE edge_request_duration_seconds histogram\n");
    render_histogram(b, "edge_request_duration_seconds", workers, n_workers, offsetof(edge_counters, duration),
                     offsetof(edge_counters, duration_count), offsetof(edge_counters, duration_sum_us));

    edge_buf_append_str(b, "# HELP edge_connections Open client connections, by protocol.\n"
                           "# TYPE edge_connections gauge\n");
    for (int p = 0; p < EDGE_PROTO_COUNT; p++)
        edge_buf_printf(b, "edge_connections{protocol=\"%s\"} %llu\n", proto_names[p],
                        (unsigned long long)SUM(open_conns[p]));
}


/* The distinct upstream names of every worker (a name may have another slot
 * in each worker); slot 0's "" first. */
static int upstream_names(edge_worker *workers, int n_workers, const char **names, int max)
{
    int n = 0;
    names[n++] = "";
    for (int w = 0; w < n_workers; w++)
        for (int i = 1; i < EDGE_UPSTREAM_STATS_SLOTS; i++) {
            const edge_upstream_stats *st = &workers[w].counters.upstreams[i];
            if (!atomic_load_explicit(&st->used, memory_order_acquire)) break;
            int seen = 0;
            for (int j = 0; j < n && !seen; j++) seen = strcmp(names[j], st->name) == 0;
            if (!seen && n < max) names[n++] = st->name;
        }
    return n;
}

/* The sum over workers of the counter at off in the stats of name. */
static uint64_t upstream_sum(edge_worker *workers, int n_workers, const char *name, size_t off)
{
    uint64_t total = 0;
    for (int w = 0; w < n_workers; w++)
        for (int i = 0; i < EDGE_UPSTREAM_STATS_SLOTS; i++) {
            const edge_upstream_stats *st = &workers[w].counters.upstreams[i];
            if (i > 0 && !atomic_load_explicit(&st->used, memory_order_acquire)) break;
            if (strcmp(i == 0 ? "" : st->name, name) != 0) continue;
            total += load((const edge_counter *)((const char *)st + off));
            break;
        }
    return total;
}

#define USUM(field) upstream_sum(workers, n_workers, names[u], offsetof(edge_upstream_stats, field))

static void render_upstream(edge_buf *b, edge_worker *workers, int n_workers)
{
    static const char *const codes[7] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx", "error"};
    const char *names[256];
    int n = upstream_names(workers, n_workers, names, (int)EDGE_ARRAY_LEN(names));
    edge_buf_append_str(b, "# HELP edge_upstream_requests_total Upstream tries (each retry counts), by upstream "
                           "(\"\": a URL) and status class (error: no response).\n"
                           "# TYPE edge_upstream_requests_total counter\n");
    for (int u = 0; u < n; u++)
        for (int c = 0; c < 7; c++)
            edge_buf_printf(b, "edge_upstream_requests_total{upstream=\"%s\",code=\"%s\"} %llu\n", names[u],
                            codes[c], (unsigned long long)USUM(requests[c]));
    edge_buf_append_str(b, "# HELP edge_upstream_connect_failures_total Upstream connects (TCP or TLS) that "
                           "failed or timed out.\n# TYPE edge_upstream_connect_failures_total counter\n");
    for (int u = 0; u < n; u++)
        edge_buf_printf(b, "edge_upstream_connect_failures_total{upstream=\"%s\"} %llu\n", names[u],
                        (unsigned long long)USUM(connect_failures));
    edge_buf_append_str(b, "# HELP edge_upstream_connections Upstream connections carrying a request (active) "
                           "or idle in a pool.\n# TYPE edge_upstream_connections gauge\n");
    for (int u = 0; u < n; u++) {
        edge_buf_printf(b, "edge_upstream_connections{upstream=\"%s\",state=\"active\"} %llu\n", names[u],
                        (unsigned long long)USUM(conns_active));
        edge_buf_printf(b, "edge_upstream_connections{upstream=\"%s\",state=\"idle\"} %llu\n", names[u],
                        (unsigned long long)USUM(conns_idle));
    }
    edge_buf_append_str(b, "# HELP edge_upstream_health_checks_total Active health checks, by upstream and "
                           "result (pass, fail); not counted in the request metrics.\n"
                           "# TYPE edge_upstream_health_checks_total counter\n");
    for (int u = 1; u < n; u++) {
        edge_buf_printf(b, "edge_upstream_health_checks_total{upstream=\"%s\",result=\"pass\"} %llu\n", names[u],
                        (unsigned long long)USUM(health_checks[1]));
        edge_buf_printf(b, "edge_upstream_health_checks_total{upstream=\"%s\",result=\"fail\"} %llu\n", names[u],
                        (unsigned long long)USUM(health_checks[0]));
    }
    metric(b, "edge_upstream_connections_opened_total", "counter", "Upstream connections opened.",
           SUM(upstream_conns_opened));
    metric(b, "edge_upstream_connections_reused_total", "counter",
           "Upstream requests sent on a kept-alive connection from a pool.", SUM(upstream_conns_reused));
    edge_buf_append_str(b, "# HELP edge_upstream_response_seconds Time from the start of edge.fetch to "
                           "its result.\n# TYPE edge_upstream_response_seconds histogram\n");
    render_histogram(b, "edge_upstream_response_seconds", workers, n_workers,
                     offsetof(edge_counters, upstream_duration), offsetof(edge_counters, upstream_duration_count),
                     offsetof(edge_counters, upstream_duration_sum_us));
    edge_health_render(b);
}

/* One counter family with a label, summed over the workers. */
static void labelled(edge_buf *b, const char *name, const char *help, const char *label,
                     const char *const *values, const uint64_t *counts, int n)
{
    edge_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int i = 0; i < n; i++)
        edge_buf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, values[i], (unsigned long long)counts[i]);
}

static void render_stale(edge_buf *b, edge_worker *workers, int n_workers)
{
    static const char *const reasons[] = {"grace", "error"};
    static const char *const results[] = {"not_modified", "modified", "failed"};
    uint64_t stale[2] = {SUM(stale_served[0]), SUM(stale_served[1])};
    uint64_t reval[3] = {SUM(revalidations[0]), SUM(revalidations[1]), SUM(revalidations[2])};
    labelled(b, "edge_cache_stale_served_total",
             "Responses served from an expired entry: in grace (stale-while-revalidate) or after the "
             "origin failed (stale-if-error).", "reason", reasons, stale, 2);
    labelled(b, "edge_cache_revalidations_total",
             "Conditional refreshes of an expired entry, by outcome (not_modified: the body was reused).",
             "result", results, reval, 3);
    metric(b, "edge_cache_refreshes_total", "counter", "Background refreshes of entries in grace.",
           SUM(refreshes));
}

static void render_cache(edge_buf *b, edge_cache *cache)
{
    edge_cache_stats st;
    edge_cache_get_stats(cache, &st);
    metric(b, "edge_cache_hits_total", "counter", "Cache lookups that found a fresh entry.", st.hits);
    metric(b, "edge_cache_misses_total", "counter", "Cache lookups that found nothing fresh.", st.misses);
    metric(b, "edge_cache_evictions_total", "counter", "Entries evicted to stay within --cache-size.", st.evictions);
    metric(b, "edge_cache_bytes", "gauge", "Bytes held by cache entries.", st.bytes);
    metric(b, "edge_cache_max_bytes", "gauge", "The cache's bound (--cache-size).", st.max_bytes);
    metric(b, "edge_cache_entries", "gauge", "Entries in the cache.", st.entries);
    metric(b, "edge_cache_purged_total", "counter", "Entries removed or made stale by a purge.", st.purged);
}

/* The shared dictionaries' stats, taken once per scrape (each under its lock). */
typedef struct dict_rows {
    const char *name[64];
    edge_shdict_stats st[64];
    int n;
} dict_rows;

static void take_dict_stats(edge_shdict *d, void *ud)
{
    dict_rows *r = ud;
    if (r->n == (int)EDGE_ARRAY_LEN(r->name)) return;
    r->name[r->n] = edge_shdict_name(d);
    edge_shdict_get_stats(d, &r->st[r->n++]);
}

#define DICT_FAMILY(field, metric_name, type, help)                                                         \
    do {                                                                                                    \
        edge_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", metric_name, help, metric_name, type);            \
        for (int i = 0; i < r.n; i++)                                                                       \
            edge_buf_printf(b, "%s{dict=\"%s\"} %llu\n", metric_name, r.name[i],                            \
                            (unsigned long long)r.st[i].field);                                             \
    } while (0)

/* Names are letters, digits, '_', '-' and '.' (shared_dict.c): no label escaping needed. */
static void render_shared_dicts(edge_buf *b)
{
    dict_rows r = {.n = 0};
    edge_shdict_each(take_dict_stats, &r);
    if (r.n == 0) return;
    DICT_FAMILY(bytes, "edge_shared_dict_bytes", "gauge",
                "Bytes the shared dict's keys take (overhead included; expired keys until freed).");
    DICT_FAMILY(capacity, "edge_shared_dict_capacity_bytes", "gauge", "The shared dict's bound in bytes.");
    DICT_FAMILY(keys, "edge_shared_dict_keys", "gauge", "Keys stored in the shared dict (expired ones until freed).");
    DICT_FAMILY(evictions, "edge_shared_dict_evictions_total", "counter",
                "Keys evicted before they expired, to make room for a write.");
}

static void render_reloads(edge_buf *b, edge_worker *workers, int n_workers)
{
    uint64_t reloads, failures;
    edge_worker_reload_stats(&reloads, &failures);
    metric(b, "edge_reloads_total", "counter", "Script reloads (SIGHUP), each counted once.", reloads);
    metric(b, "edge_reload_failures_total", "counter",
           "Reloads that at least one worker failed to load (it kept its previous script).", failures);
    edge_buf_append_str(b, "# HELP edge_worker_reloads_total Script reloads each worker ran, by outcome.\n"
                           "# TYPE edge_worker_reloads_total counter\n");
    for (int i = 0; i < n_workers; i++) {
        const edge_counters *m = &workers[i].counters;
        edge_buf_printf(b, "edge_worker_reloads_total{worker=\"%d\",result=\"ok\"} %llu\n", i,
                        (unsigned long long)load(&m->reloads));
        edge_buf_printf(b, "edge_worker_reloads_total{worker=\"%d\",result=\"failed\"} %llu\n", i,
                        (unsigned long long)load(&m->reload_failures));
    }
}

void edge_metrics_render(edge_buf *b, edge_worker *workers, int n_workers, edge_cache *cache)
{
    render_requests(b, workers, n_workers);
    metric(b, "edge_requests_in_flight", "gauge", "Requests in progress across all workers.",
           (uint64_t)edge_dispatch_inflight());
    metric(b, "edge_requests_rejected_total", "counter", "Requests answered 503 by the in-flight limit.",
           SUM(overloaded));
    metric(b, "edge_coalesced_waits_total", "counter", "Misses that waited for an identical miss in progress.",
           SUM(coalesced_waits));
    render_stale(b, workers, n_workers);
    metric(b, "edge_tls_handshakes_total", "counter", "TLS handshakes completed.", SUM(tls_handshakes));
    metric(b, "edge_tls_resumed_total", "counter", "TLS handshakes completed that resumed a session.",
           SUM(tls_resumed));
    metric(b, "edge_tls_handshake_failures_total", "counter", "TLS handshakes that failed or timed out.",
           SUM(tls_failures));
    metric(b, "edge_lua_errors_total", "counter", "Hook runs that raised, returned a bad value or ran out of budget.",
           SUM(lua_errors));
    metric(b, "edge_lua_budget_kills_total", "counter", "Hook runs stopped by --lua-budget.", SUM(lua_budget_kills));
    render_reloads(b, workers, n_workers);
    render_upstream(b, workers, n_workers);
    render_cache(b, cache);
    render_shared_dicts(b);
}
