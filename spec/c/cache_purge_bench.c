/* Measures purges of many entries: how long purge_tag / purge_prefix take
 * for TAGGED entries among ENTRIES, how long the purge held a shard's lock
 * at most (what a worker may wait behind it), and how slow a get became
 * meanwhile for a thread looking up random keys in every shard.
 *
 *   cache_purge_bench [ENTRIES [TAGGED]]      default 1000000 100000
 *
 * The lock holds are timed by wrapping pthread_mutex_lock/unlock around
 * the cache's own code: this file #includes src/cache.c, cache_tags.c and
 * cache_purge.c after defining the wrappers, so every hold the cache takes
 * is measured (per thread: the purging thread's longest hold is the
 * figure) and the cache's sources carry no probe. Built by
 * `make cache-purge-bench` (-O2, no sanitizer); run at a small size by
 * spec/cache_life_spec.lua, which checks the counts and that the purge took
 * the lock at least once per 1,024 entries. Prints "cache_purge_bench: ok"
 * lines, or a "FAIL" line and exits 1. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The purging thread's lock holds, each timed twice: wall clock (what a
 * worker waiting for the shard would wait, the purger's preemptions on a
 * busy machine included) and the thread's CPU time (the work done under
 * the lock). Other threads' holds are not timed. */
#define MAX_HOLDS 65536
static _Thread_local int timing;
static _Thread_local double wall_start, cpu_start;
static double hold_wall[MAX_HOLDS], hold_cpu[MAX_HOLDS];
static unsigned long holds;

static int timed_lock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_lock(m);
    if (timing) {
        wall_start = mono_now();
        cpu_start = cpu_now();
    }
    return rc;
}

static int timed_unlock(pthread_mutex_t *m)
{
    if (timing && holds < MAX_HOLDS) {
        hold_cpu[holds] = cpu_now() - cpu_start;
        hold_wall[holds] = mono_now() - wall_start;
        holds++;
    }
    return pthread_mutex_unlock(m);
}

#define pthread_mutex_lock(m) timed_lock(m)
#define pthread_mutex_unlock(m) timed_unlock(m)
#include "cache.c"
#include "cache_purge.c"
#include "cache_tags.c"
#undef pthread_mutex_lock
#undef pthread_mutex_unlock

#define NOW 1000.0

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cache_purge_bench: FAIL: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    exit(1);
}

static edge_cache *cache;
static long n_entries, n_tagged;

/* Entry i: "/h/<i>" tagged "hot" when i % (n_entries / n_tagged) == 0,
 * "/c/<i>" otherwise; every entry also carries its group's tag (1,000
 * entries a group), so the index holds many tags. */
static int is_hot(long i)
{
    return i % (n_entries / n_tagged) == 0;
}

static int key_of(long i, char *buf, size_t size)
{
    return snprintf(buf, size, "/%c/%ld", is_hot(i) ? 'h' : 'c', i);
}

static void put(long i, double grace)
{
    char key[32], tags[64];
    int klen = key_of(i, key, sizeof(key));
    int tlen = snprintf(tags, sizeof(tags), "%sg%ld", is_hot(i) ? "hot " : "", i / 1000);
    edge_response r;
    memset(&r, 0, sizeof(r));
    r.status = 200;
    edge_response_add_header(&r, "content-type", 12, "text/plain", 10);
    edge_response_add_header(&r, "surrogate-key", 13, tags, (size_t)tlen);
    edge_buf_append(&r.body, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 64);
    edge_cache_life life = {.ttl = 3600, .grace = grace, .keep = 0};
    if (edge_cache_put_life(cache, key, (size_t)klen, &r, NOW, &life) != EDGE_OK) fail("put %ld refused", i);
    edge_buf_free(&r.data);
    edge_buf_free(&r.body);
    free(r.headers);
}

/* ---- the observer: gets of random keys while a purge runs ---- */

#define LAT_BUCKETS 40     /* latency histogram: bucket b holds [2^b, 2^(b+1)) ns */

typedef struct observer {
    pthread_t thread;
    _Atomic int stop;
    unsigned long gets;
    double max;
    unsigned long hist[LAT_BUCKETS];
} observer;

static void *observe(void *arg)
{
    observer *o = arg;
    uint32_t x = 2463534242u;
    char key[32];
    while (!atomic_load_explicit(&o->stop, memory_order_relaxed)) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        long i = (long)(x % (uint32_t)n_entries);
        int klen = key_of(i, key, sizeof(key));
        double t0 = mono_now();
        edge_cache_entry *e = edge_cache_get(cache, key, (size_t)klen, NOW);
        double took = mono_now() - t0;
        if (e) edge_cache_release(e);
        o->gets++;
        if (took > o->max) o->max = took;
        int b = 0;
        for (double ns = took * 1e9; ns >= 2 && b < LAT_BUCKETS - 1; ns /= 2) b++;
        o->hist[b]++;
    }
    return NULL;
}

static void observer_start(observer *o)
{
    memset(o, 0, sizeof(*o));
    if (pthread_create(&o->thread, NULL, observe, o) != 0) fail("pthread_create");
}

/* Stops the observer; returns the upper bound of its 99.9th percentile bucket, in seconds. */
static double observer_stop(observer *o)
{
    atomic_store(&o->stop, 1);
    pthread_join(o->thread, NULL);
    unsigned long seen = 0;
    for (int b = 0; b < LAT_BUCKETS; b++) {
        seen += o->hist[b];
        if (seen * 1000 >= o->gets * 999) return (double)(2ul << b) / 1e9;
    }
    return o->max;
}

static void report_observer(const char *what, observer *o, double p999)
{
    printf("cache_purge_bench: ok: %s: a concurrent thread's gets: %lu, longest %.3f ms, 99.9th percentile < %.3f ms\n",
           what, o->gets, o->max * 1e3, p999 * 1e3);
}

/* ---- purges ---- */

typedef size_t (*purge_fn)(void);

static size_t purge_hot_hard(void)
{
    return edge_cache_purge_tag(cache, "hot", 3, EDGE_PURGE_HARD, NOW);
}

static size_t purge_hot_soft(void)
{
    return edge_cache_purge_tag(cache, "hot", 3, EDGE_PURGE_SOFT, NOW + 1);
}

static size_t purge_prefix_hard(void)
{
    return edge_cache_purge_prefix(cache, "/h/", 3, EDGE_PURGE_HARD, NOW);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) and prints its median, 99th percentile and maximum in ms. */
static void print_spread(const char *what, double *v, unsigned long n)
{
    qsort(v, n, sizeof(*v), by_value);
    printf("median %.3f, 99th percentile %.3f, longest %.3f ms %s", v[n / 2] * 1e3, v[n * 99 / 100] * 1e3,
           v[n - 1] * 1e3, what);
}

/* Runs one purge with the observer going; prints its figures. */
static void measure(const char *what, purge_fn fn)
{
    observer o;
    observer_start(&o);
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);                   /* the observer is running */
    holds = 0;
    timing = 1;
    double t0 = mono_now(), c0 = cpu_now();
    size_t n = fn();
    double took = mono_now() - t0, cpu = cpu_now() - c0;
    timing = 0;
    unsigned long n_holds = holds;
    nanosleep(&pause, NULL);
    double p999 = observer_stop(&o);
    if ((long)n != n_tagged) fail("%s purged %zu entries, expected %ld", what, n, n_tagged);
    if (n_holds < (unsigned long)(n_tagged / CACHE_PURGE_BATCH))
        fail("%s took the lock %lu times for %ld entries: more than %d entries a hold", what, n_holds, n_tagged,
             CACHE_PURGE_BATCH);
    printf("cache_purge_bench: ok: %s: %zu of %ld entries in %.1f ms (%.1f ms CPU), %lu lock holds\n", what, n,
           n_entries, took * 1e3, cpu * 1e3, n_holds);
    printf("cache_purge_bench: ok: %s: lock holds: ", what);
    print_spread("wall, ", hold_wall, n_holds);
    print_spread("CPU\n", hold_cpu, n_holds);
    report_observer(what, &o, p999);
}

static void fill(double grace, int hot_only)
{
    for (long i = 0; i < n_entries; i++)
        if (!hot_only || is_hot(i)) put(i, grace);
}

int main(int argc, char **argv)
{
    n_entries = argc > 1 ? atol(argv[1]) : 1000000;
    n_tagged = argc > 2 ? atol(argv[2]) : 100000;
    if (n_entries < 1 || n_tagged < 1 || n_tagged > n_entries || n_entries % n_tagged != 0)
        fail("usage: cache_purge_bench [ENTRIES [TAGGED]] (TAGGED divides ENTRIES)");
    cache = edge_cache_new((size_t)n_entries * 1024);   /* room for all: nothing evicted */

    double t0 = mono_now();
    fill(0, 0);
    edge_cache_stats st;
    edge_cache_get_stats(cache, &st);
    if ((long)st.entries != n_entries || st.evictions) fail("filled %llu entries", (unsigned long long)st.entries);
    printf("cache_purge_bench: ok: filled %ld entries (%ld tagged hot) in %.2f s, %.1f MB counted\n", n_entries,
           n_tagged, mono_now() - t0, (double)st.bytes / 1e6);

    observer o;
    observer_start(&o);
    struct timespec second = {1, 0};
    nanosleep(&second, NULL);
    report_observer("no purge (baseline)", &o, observer_stop(&o));

    measure("purge_tag hot, hard", purge_hot_hard);
    edge_cache_get_stats(cache, &st);
    if ((long)st.entries != n_entries - n_tagged) fail("%llu entries left", (unsigned long long)st.entries);

    fill(60, 1);
    measure("purge_tag hot, soft", purge_hot_soft);
    edge_cache_get_stats(cache, &st);
    if ((long)st.entries != n_entries) fail("soft purge removed entries: %llu left", (unsigned long long)st.entries);
    char key[32];
    int klen = key_of(0, key, sizeof(key));
    edge_cache_entry *e = edge_cache_lookup(cache, key, (size_t)klen, NOW + 1, EDGE_CACHE_STALE);
    if (e == NULL || edge_cache_entry_state(e, NOW + 1) != EDGE_CACHE_GRACE) fail("a soft-purged entry is not in grace");
    edge_cache_release(e);

    measure("purge_prefix /h/, hard", purge_prefix_hard);
    edge_cache_free(cache);
    return 0;
}
