/* Stress test for src/cache.c (with cache_tags.c and cache_purge.c): 8
 * threads hammer ONE shard of the cache with get / peek / stale look-up /
 * put / purge (exact; by key with derived keys, by tag, by prefix; hard and
 * soft) / release and flight join / try-lead / done / leave, checking as
 * they go that an entry they hold a reference to keeps its key, headers,
 * body and expiry intact even while other threads evict, replace or purge
 * it (refcount vs eviction; a soft purge replaces a held entry by a stale
 * copy rather than changing it), that a flight has one leader at a time,
 * and that every waiter is either woken exactly once or withdrawn.
 *
 * Every base key has one derived key (base.."\0ce=N", as a compressed copy
 * is named) chosen to land in the same shard; entries are tagged (a
 * Surrogate-Key field: "all g<group> b<base>"), some have grace or keep.
 *
 * Built twice by `make cache-stress`: build/test/cache_stress_tsan
 * (-fsanitize=thread) and build/test/cache_stress_asan (address,undefined);
 * run by spec/cache_stress_spec.lua. Exit 0 when every check held; 1 with a
 * "cache_stress: FAIL" line otherwise.
 *
 *   cache_stress [SECONDS]    time for the hammer phase (default 3, at most 30)
 *
 * The stats must count exactly the get calls (peeks and stale look-ups count
 * nothing), and stats.purged exactly what the purge calls reported.
 *
 * Uses only the public API in src/cache.h (and, through it, request.h's
 * response helpers). EDGE_OK is 0 (src/common.h, not included here): a put
 * that returns 0 stored the entry, a join that returns 0 made the caller the
 * leader. */
#include "cache.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS       8
#define NKEYS         24               /* base keys */
#define NALL          (2 * NKEYS)      /* and one derived key each: keys[NKEYS + i] derives from keys[i] */
#define GROUPS        4                /* tag g<i % GROUPS> */
#define SHARDS        16               /* as in src/cache.c */
#define TARGET_SHARD  11
#define SHARD_BYTES   (32 * 1024)      /* each shard's share of the bound */
#define CACHE_BYTES   (SHARDS * SHARD_BYTES)
#define MAX_ITERS     2000000          /* per thread, on top of the time bound */
#define BODY_MIN      1024
#define BODY_SPREAD   5120             /* bodies of 1 to 6 KiB: 24 keys overfill 32 KiB */
#define LONG_TTL      1e9

static edge_cache *cache;
static char keys[NALL][48];
static size_t key_lens[NALL];
static char tags_of[NKEYS][32];        /* the Surrogate-Key field of base key i and its derived key */
static atomic_int leaders[NALL];       /* leaders of key i's flight right now: 0 or 1 */
static atomic_uint next_version = 1;
static atomic_ullong clock_ticks;      /* the virtual clock: one tick per operation */
static atomic_int stop;
static double deadline;

/* Totals, for the summary and the final checks. */
static atomic_ullong n_gets, n_hits, n_puts, n_purges, n_purged, n_holds_unlinked,
    n_leads, n_waits, n_woken, n_withdrawn, n_late, n_expired_puts, n_ops,
    n_wide_purges, n_wide_purged, n_stale_looks, n_stale_held, n_try_leads;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cache_stress: FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    _exit(1);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double virtual_now(void)
{
    return 1000.0 + (double)atomic_load_explicit(&clock_ticks, memory_order_relaxed) * 1e-4;
}

/* The cache's hash and shard choice, as in src/cache.c (hash_key, shard_of):
 * FNV-1a 64 (with src/cache.c's offset basis), MurmurHash3's finaliser, the
 * top 4 bits. main() checks the prediction against a real cache before
 * relying on it (keys_share_a_shard). */
static uint64_t hash_key(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb93fe53a87cdULL;
    h ^= h >> 33;
    return h;
}

static unsigned shard_of(const char *s, size_t n)
{
    return (unsigned)(hash_key(s, n) >> 60) & (SHARDS - 1);
}

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* ---- what version v of key k looks like ---- */

static size_t body_len_of(uint32_t v)
{
    return BODY_MIN + (size_t)((v * 2654435761u) >> 8) % BODY_SPREAD;
}

static unsigned char body_byte(int k, uint32_t v, size_t i)
{
    return (unsigned char)(k * 131 + v * 7 + i * 13);
}

static void put_version(int k, uint32_t v, double ttl)
{
    edge_response r;
    memset(&r, 0, sizeof(r));
    r.status = 200 + (int)(v % 3);
    char ver[16];
    int n = snprintf(ver, sizeof(ver), "%08x", v);
    edge_response_add_header(&r, "x-key", 5, keys[k], key_lens[k]);
    edge_response_add_header(&r, "x-ver", 5, ver, (size_t)n);
    const char *tags = tags_of[k % NKEYS];
    edge_response_add_header(&r, "surrogate-key", 13, tags, strlen(tags));
    size_t len = body_len_of(v);
    edge_buf_reserve(&r.body, len);
    for (size_t i = 0; i < len; i++) r.body.base[i] = (char)body_byte(k, v, i);
    r.body.len = len;
    atomic_fetch_add_explicit(&n_puts, 1, memory_order_relaxed);
    /* A third of the versions have no grace or keep, the rest one or both
     * (some 100 to 200 operations' worth of the clock). */
    edge_cache_life life = {.ttl = ttl, .grace = v % 3 ? 0.01 : 0, .keep = v % 3 == 2 ? 0.02 : 0};
    if (edge_cache_put_life(cache, keys[k], key_lens[k], &r, virtual_now(), &life) != 0)
        fail("put of key %d version %u (%zu bytes) refused", k, v, len);
    edge_buf_free(&r.data);
    edge_buf_free(&r.body);
    free(r.headers);
}

static void put_new(int k, double ttl)
{
    put_version(k, atomic_fetch_add_explicit(&next_version, 1, memory_order_relaxed), ttl);
}

/* Checks everything an entry of key k holds; returns its version. */
static uint32_t check_entry(const edge_cache_entry *e, int k, const char *when)
{
    if (e->key_len != key_lens[k] || memcmp(edge_cache_entry_key(e), keys[k], key_lens[k]) != 0)
        fail("%s: entry for key %d has key '%.*s'", when, k, (int)e->key_len, edge_cache_entry_key(e));
    if (e->n_headers != 3) fail("%s: key %d: %u headers", when, k, e->n_headers);
    const edge_header *h = edge_cache_entry_headers(e);
    const char *d = edge_cache_entry_header_data(e);
    if (h[0].name.len != 5 || memcmp(d + h[0].name.off, "x-key", 5) != 0 ||
        h[0].value.len != key_lens[k] || memcmp(d + h[0].value.off, keys[k], key_lens[k]) != 0)
        fail("%s: key %d: bad x-key header", when, k);
    if (h[1].name.len != 5 || memcmp(d + h[1].name.off, "x-ver", 5) != 0 || h[1].value.len != 8)
        fail("%s: key %d: bad x-ver header", when, k);
    const char *tags = tags_of[k % NKEYS];
    if (h[2].name.len != 13 || memcmp(d + h[2].name.off, "surrogate-key", 13) != 0 ||
        h[2].value.len != strlen(tags) || memcmp(d + h[2].value.off, tags, strlen(tags)) != 0)
        fail("%s: key %d: bad surrogate-key header", when, k);
    char ver[9];
    memcpy(ver, d + h[1].value.off, 8);
    ver[8] = '\0';
    uint32_t v = (uint32_t)strtoul(ver, NULL, 16);
    if (e->status != 200 + (int)(v % 3)) fail("%s: key %d v %u: status %d", when, k, v, e->status);
    if (e->body_len != body_len_of(v))
        fail("%s: key %d v %u: body of %zu bytes, expected %zu", when, k, v, e->body_len, body_len_of(v));
    const unsigned char *b = (const unsigned char *)edge_cache_entry_body(e);
    for (size_t i = 0; i < e->body_len; i++)
        if (b[i] != body_byte(k, v, i)) fail("%s: key %d v %u: body byte %zu corrupt", when, k, v, i);
    return v;
}

/* The copy the server makes of an entry must match it too. */
static void check_copy(const edge_cache_entry *e, int k, uint32_t v)
{
    edge_response r;
    memset(&r, 0, sizeof(r));
    edge_cache_entry_to_response(e, &r);
    if (r.status != e->status || r.n_headers != 3 || r.body.len != body_len_of(v))
        fail("copy of key %d v %u differs", k, v);
    for (size_t i = 0; i < r.body.len; i++)
        if ((unsigned char)r.body.base[i] != body_byte(k, v, i)) fail("copy of key %d v %u: body corrupt", k, v);
    const edge_header *h = &r.headers[0];
    if (h->value.len != key_lens[k] || memcmp(r.data.base + h->value.off, keys[k], key_lens[k]) != 0)
        fail("copy of key %d: bad x-key", k);
    edge_buf_free(&r.data);
    edge_buf_free(&r.body);
    free(r.headers);
}

static edge_cache_entry *get(int k, double now)
{
    atomic_fetch_add_explicit(&n_gets, 1, memory_order_relaxed);
    edge_cache_entry *e = edge_cache_get(cache, keys[k], key_lens[k], now);
    if (e) {
        atomic_fetch_add_explicit(&n_hits, 1, memory_order_relaxed);
        if (e->expires_at <= now) fail("get returned an expired entry of key %d", k);
    }
    return e;
}

static void yield_n(int n)
{
    for (int i = 0; i < n; i++) sched_yield();
}

/* ---- flights ---- */

typedef struct test_waiter {
    edge_cache_waiter base;
    atomic_int woken;
} test_waiter;

static void on_wake(edge_cache_waiter *w)
{
    /* Called by the leader's thread without locks; the last touch of w. */
    test_waiter *t = (test_waiter *)(void *)w;
    atomic_fetch_add_explicit(&t->woken, 1, memory_order_release);
}

/* Waits (bounded) until w was woken; returns 1 when it was. */
static int wait_woken(test_waiter *w, double seconds)
{
    double until = mono_now() + seconds;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&w->woken, memory_order_acquire)) return 1;
        if ((i & 63) == 0 && mono_now() > until) return 0;
        sched_yield();
    }
}

/* The leader: compute (store a new version), with the flight held a little
 * so others join it. */
static void lead_flight(int k, uint32_t *rnd)
{
    atomic_fetch_add_explicit(&n_leads, 1, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&leaders[k], 1, memory_order_acq_rel) != 0)
        fail("two leaders for key %d at once", k);
    yield_n((int)(xorshift(rnd) % 6));
    put_new(k, LONG_TTL);
    atomic_fetch_sub_explicit(&leaders[k], 1, memory_order_acq_rel);
    edge_cache_flight_done(cache, keys[k], key_lens[k]);
}

static void flight_op(int k, uint32_t *rnd)
{
    if (xorshift(rnd) % 4 == 0) {
        /* A background refresh: leads only when no flight runs, never waits. */
        if (edge_cache_flight_try_lead(cache, keys[k], key_lens[k]) != 0) return;
        atomic_fetch_add_explicit(&n_try_leads, 1, memory_order_relaxed);
        lead_flight(k, rnd);
        return;
    }
    test_waiter w;
    memset(&w, 0, sizeof(w));
    w.base.wake = on_wake;
    atomic_init(&w.woken, 0);
    if (edge_cache_flight_join(cache, keys[k], key_lens[k], &w.base) == 0) {
        lead_flight(k, rnd);
        if (atomic_load_explicit(&w.woken, memory_order_acquire)) fail("a leader was woken (key %d)", k);
        return;
    }
    atomic_fetch_add_explicit(&n_waits, 1, memory_order_relaxed);
    int give_up = xorshift(rnd) % 2;   /* half the waiters "time out" at once, as a short --coalesce-timeout does */
    if (give_up) yield_n((int)(xorshift(rnd) % 3));
    if (give_up || !wait_woken(&w, 2.0)) {
        if (edge_cache_flight_leave(cache, keys[k], key_lens[k], &w.base)) {
            /* Withdrawn under the lock: the leader's done can no longer see w. */
            atomic_fetch_add_explicit(&n_withdrawn, 1, memory_order_relaxed);
            yield_n(2);
            if (atomic_load_explicit(&w.woken, memory_order_acquire))
                fail("a withdrawn waiter was woken (key %d)", k);
            return;                  /* w (on this stack) is dead from here */
        }
        /* The flight ended: the wake is on its way; w must live until then. */
        atomic_fetch_add_explicit(&n_late, 1, memory_order_relaxed);
        if (!wait_woken(&w, 5.0)) fail("leave said the wake was coming, but it never came (key %d)", k);
    } else {
        atomic_fetch_add_explicit(&n_woken, 1, memory_order_relaxed);
    }
    yield_n(1);
    if (atomic_load_explicit(&w.woken, memory_order_acquire) != 1)
        fail("a waiter was woken %d times (key %d)", atomic_load(&w.woken), k);
    /* Woken: look the key up, as a woken request does. */
    edge_cache_entry *e = get(k, virtual_now());
    if (e) {
        check_entry(e, k, "after wake");
        edge_cache_release(e);
    }
}

/* ---- stale look-ups and purges of many ---- */

/* A look-up that takes stale entries, as a request that may serve one
 * does: what comes back is never past all its lifetimes, and never changes
 * while held (a soft purge replaces a held entry with a stale copy). */
static void stale_look(int k, uint32_t *rnd)
{
    double now = virtual_now();
    edge_cache_entry *e = edge_cache_lookup(cache, keys[k], key_lens[k], now, EDGE_CACHE_STALE);
    if (e == NULL) return;
    atomic_fetch_add_explicit(&n_stale_looks, 1, memory_order_relaxed);
    int state = edge_cache_entry_state(e, now);
    if (state == EDGE_CACHE_GONE) fail("a stale look-up returned an entry of key %d past all its lifetimes", k);
    if (state != EDGE_CACHE_FRESH) atomic_fetch_add_explicit(&n_stale_held, 1, memory_order_relaxed);
    double expires = e->expires_at;
    uint32_t v = check_entry(e, k, "stale look-up");
    yield_n((int)(xorshift(rnd) % 3));
    if (e->expires_at != expires || check_entry(e, k, "held stale") != v)
        fail("held entry of key %d changed (expiry %.6f -> %.6f)", k, expires, e->expires_at);
    edge_cache_release(e);
}

static size_t purge_tag(const char *tag, int soft, double now)
{
    return edge_cache_purge_tag(cache, tag, strlen(tag), soft, now);
}

/* Purges by key (with its derived key), tag or prefix, hard or soft, while
 * the others read and write. A count is never more than could be there;
 * the counts add up to stats.purged at the end. */
static void wide_purge(int k, uint32_t *rnd)
{
    int base = k % NKEYS, soft = (int)(xorshift(rnd) % 2);
    double now = virtual_now();
    char tag[16];
    size_t n, most;
    switch (xorshift(rnd) % 8) {
    case 0: case 1:
        n = edge_cache_purge_key(cache, keys[base], key_lens[base], soft, now);
        most = 2;
        break;
    case 2: case 3:
        snprintf(tag, sizeof(tag), "b%d", base);
        n = purge_tag(tag, soft, now);
        most = 2;
        break;
    case 4: case 5:
        snprintf(tag, sizeof(tag), "g%d", base % GROUPS);
        n = purge_tag(tag, soft, now);
        most = 2 * NKEYS / GROUPS;
        break;
    case 6:
        n = purge_tag("all", soft, now);
        most = NALL;
        break;
    default:           /* the base key less its last digit: it and its siblings, derived keys too */
        n = edge_cache_purge_prefix(cache, keys[base], key_lens[base] - 1, soft, now);
        most = NALL;
        break;
    }
    if (n > most) fail("a purge for key %d counted %zu entries, more than the %zu there can be", k, n, most);
    atomic_fetch_add_explicit(&n_wide_purges, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_wide_purged, n, memory_order_relaxed);
}

/* ---- the hammer ---- */

static void *hammer(void *arg)
{
    uint32_t rnd = 2463534242u ^ (uint32_t)(uintptr_t)arg * 2654435761u;
    for (long it = 0; it < MAX_ITERS; it++) {
        if ((it & 255) == 0 && (atomic_load_explicit(&stop, memory_order_relaxed) || mono_now() > deadline)) {
            atomic_store_explicit(&stop, 1, memory_order_relaxed);
            break;
        }
        atomic_fetch_add_explicit(&n_ops, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&clock_ticks, 1, memory_order_relaxed);
        int k = (int)(xorshift(&rnd) % NALL);
        uint32_t op = xorshift(&rnd) % 100;
        if (op < 25) {
            /* get, check, hold it while others evict/replace/purge, check again */
            edge_cache_entry *e = get(k, virtual_now());
            if (e) {
                double expires = e->expires_at;
                uint32_t v = check_entry(e, k, "get");
                yield_n((int)(xorshift(&rnd) % 3));
                if (check_entry(e, k, "held") != v) fail("held entry of key %d changed version", k);
                if (e->expires_at != expires) fail("held entry of key %d changed its expiry", k);
                if (op < 10) check_copy(e, k, v);
                edge_cache_release(e);
            }
        } else if (op < 35) {
            stale_look(k, &rnd);
        } else if (op < 42) {
            /* get, then purge (exact and hard, or soft by base key) and
             * replace it ourselves while holding it */
            edge_cache_entry *e = get(k, virtual_now());
            if (e) {
                double expires = e->expires_at;
                uint32_t v = check_entry(e, k, "get before purge");
                if (op < 38) {
                    size_t n = edge_cache_purge_key(cache, keys[k % NKEYS], key_lens[k % NKEYS], 1, virtual_now());
                    atomic_fetch_add_explicit(&n_wide_purged, n, memory_order_relaxed);
                    stale_look(k, &rnd);   /* finds it stale now, when it has grace or keep */
                } else {
                    atomic_fetch_add_explicit(&n_purges, 1, memory_order_relaxed);
                    if (edge_cache_purge(cache, keys[k], key_lens[k]))
                        atomic_fetch_add_explicit(&n_purged, 1, memory_order_relaxed);
                }
                put_new(k, LONG_TTL);
                atomic_fetch_add_explicit(&n_holds_unlinked, 1, memory_order_relaxed);
                if (e->expires_at != expires) fail("held entry of key %d changed its expiry when purged", k);
                if (check_entry(e, k, "held after purge+put") != v) fail("held entry of key %d changed", k);
                check_copy(e, k, v);
                edge_cache_release(e);
            }
        } else if (op < 62) {
            /* put: mostly long-lived, some expiring after ~20 operations' worth of clock */
            if (op < 46) {
                atomic_fetch_add_explicit(&n_expired_puts, 1, memory_order_relaxed);
                put_new(k, 0.002);
            } else {
                put_new(k, LONG_TTL);
            }
        } else if (op < 64) {
            atomic_fetch_add_explicit(&n_purges, 1, memory_order_relaxed);
            if (edge_cache_purge(cache, keys[k], key_lens[k]))
                atomic_fetch_add_explicit(&n_purged, 1, memory_order_relaxed);
        } else if (op < 67) {
            wide_purge(k, &rnd);
        } else if (op < 70) {
            /* peek: like get, but counts neither a hit nor a miss */
            edge_cache_entry *e = edge_cache_peek(cache, keys[k], key_lens[k], virtual_now());
            if (e) {
                uint32_t v = check_entry(e, k, "peek");
                yield_n(1);
                if (check_entry(e, k, "held after peek") != v) fail("peeked entry of key %d changed", k);
                edge_cache_release(e);
            }
        } else if (op < 72) {
            edge_cache_stats st;
            edge_cache_get_stats(cache, &st);
            if (st.bytes > SHARD_BYTES) fail("shard over its bound: %llu bytes", (unsigned long long)st.bytes);
        } else {
            flight_op(k, &rnd);
        }
    }
    return NULL;
}

/* ---- single-threaded checks with known outcomes ---- */

/* Observed, not computed: in a probe cache with 4 KiB shards, an anchor entry
 * of ~3 KiB is evicted by a ~2 KiB entry exactly when both are in one shard.
 * Checks every chosen key shares the anchor's (key 0's) shard, and that a key
 * the hash puts elsewhere does not: if this fails, src/cache.c changed how it
 * picks a shard, and hash_key above needs the same change. */
static void keys_share_a_shard(const char *other, size_t other_len)
{
    edge_cache *probe = edge_cache_new(SHARDS * 4096);
    edge_response big, small;
    memset(&big, 0, sizeof(big));
    memset(&small, 0, sizeof(small));
    big.status = small.status = 200;
    edge_buf_reserve(&big.body, 3000);
    memset(big.body.base, 'a', 3000);
    big.body.len = 3000;
    edge_buf_reserve(&small.body, 2000);
    memset(small.body.base, 's', 2000);
    small.body.len = 2000;
    for (int k = 1; k <= NALL; k++) {
        const char *key = k < NALL ? keys[k] : other;
        size_t klen = k < NALL ? key_lens[k] : other_len;
        if (edge_cache_put(probe, keys[0], key_lens[0], &big, 1.0, LONG_TTL) != 0) fail("probe put");
        if (edge_cache_put(probe, key, klen, &small, 1.0, LONG_TTL) != 0) fail("probe put");
        edge_cache_entry *e = edge_cache_get(probe, keys[0], key_lens[0], 1.0);
        int evicted = e == NULL;
        if (e) edge_cache_release(e);
        edge_cache_purge(probe, key, klen);
        if (k < NALL && !evicted)
            fail("keys '%s' and '%s' are not in one shard: src/cache.c picks shards differently "
                 "from hash_key/shard_of here; update them", keys[0], key);
        if (k == NALL && evicted)
            fail("keys '%s' and '%s' share a shard, which hash_key here says they do not: "
                 "update hash_key/shard_of to match src/cache.c", keys[0], key);
    }
    edge_buf_free(&big.body);
    edge_buf_free(&small.body);
    edge_cache_free(probe);
}

static void deterministic_checks(void)
{
    edge_cache_stats st;
    double now = virtual_now();

    /* Refcount vs purge: a held entry outlives its purge and its replacement. */
    put_version(0, 1000, LONG_TTL);
    edge_cache_entry *a = get(0, now);
    if (!a) fail("get after put missed");
    edge_cache_entry *a2 = get(0, now);   /* a second reference to the same entry */
    if (a2 != a) fail("two gets of one entry returned different entries");
    if (!edge_cache_purge(cache, keys[0], key_lens[0])) fail("purge of a present key returned 0");
    atomic_fetch_add_explicit(&n_purged, 1, memory_order_relaxed);   /* counted in stats.purged */
    if (edge_cache_purge(cache, keys[0], key_lens[0])) fail("second purge returned 1");
    if (get(0, now)) fail("get after purge hit");
    put_version(0, 1001, LONG_TTL);
    edge_cache_release(a2);
    if (check_entry(a, 0, "held after purge") != 1000) fail("held entry changed");
    edge_cache_entry *b = get(0, now);
    if (!b || check_entry(b, 0, "replacement") != 1001) fail("replacement not found");

    /* Refcount vs eviction: fill the shard until key 0 is evicted; both held
     * entries stay intact. This also proves every key is in one shard: the
     * keys' bodies add up to more than one share, and the bound holds. */
    for (int round = 0; round < 4; round++)
        for (int k = 1; k < NKEYS; k++) put_version(k, 2000u + (unsigned)(round * NKEYS + k), LONG_TTL);
    edge_cache_get_stats(cache, &st);
    if (st.evictions == 0) fail("filling the shard evicted nothing");
    if (st.bytes > SHARD_BYTES) fail("one shard's keys hold %llu bytes > %d", (unsigned long long)st.bytes, SHARD_BYTES);
    if (get(0, now)) fail("key 0 survived filling the shard (not evicted: keys in other shards?)");
    check_entry(a, 0, "held after eviction");
    check_entry(b, 0, "held after eviction");
    check_copy(b, 0, 1001);
    edge_cache_release(a);
    edge_cache_release(b);

    /* Expiry: dropped by the lookup that finds it expired. */
    put_version(1, 3000, 5.0);
    edge_cache_entry *e = get(1, now + 4.9);
    if (!e) fail("entry gone before its ttl");
    edge_cache_release(e);
    if (get(1, now + 5.0)) fail("entry served at its expiry time");

    /* Flights: one leader; waiters woken by done, or withdrawn by leave. */
    test_waiter lead, w1, w2;
    memset(&lead, 0, sizeof(lead));
    memset(&w1, 0, sizeof(w1));
    memset(&w2, 0, sizeof(w2));
    lead.base.wake = w1.base.wake = w2.base.wake = on_wake;
    if (edge_cache_flight_join(cache, keys[2], key_lens[2], &lead.base) != 0) fail("first join did not lead");
    if (edge_cache_flight_join(cache, keys[2], key_lens[2], &w1.base) == 0) fail("second join led");
    if (edge_cache_flight_join(cache, keys[2], key_lens[2], &w2.base) == 0) fail("third join led");
    if (edge_cache_flight_join(cache, keys[3], key_lens[3], &lead.base) != 0) fail("join of another key did not lead");
    if (!edge_cache_flight_leave(cache, keys[2], key_lens[2], &w1.base)) fail("leave of a waiting waiter returned 0");
    if (edge_cache_flight_leave(cache, keys[2], key_lens[2], &w1.base)) fail("second leave returned 1");
    edge_cache_flight_done(cache, keys[2], key_lens[2]);
    if (atomic_load(&w1.woken) != 0 || atomic_load(&w2.woken) != 1 || atomic_load(&lead.woken) != 0)
        fail("done woke w1 %d, w2 %d, leader %d times (expected 0, 1, 0)", atomic_load(&w1.woken),
             atomic_load(&w2.woken), atomic_load(&lead.woken));
    if (edge_cache_flight_leave(cache, keys[2], key_lens[2], &w2.base)) fail("leave after done returned 1");
    edge_cache_flight_done(cache, keys[2], key_lens[2]);   /* no flight: a no-op */
    edge_cache_flight_done(cache, keys[3], key_lens[3]);
    if (atomic_load(&w2.woken) != 1) fail("a second done woke again");
    memset(&w1, 0, sizeof(w1));
    w1.base.wake = on_wake;
    if (edge_cache_flight_join(cache, keys[2], key_lens[2], &w1.base) != 0) fail("join after done did not lead");
    edge_cache_flight_done(cache, keys[2], key_lens[2]);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    if (!(seconds > 0 && seconds <= 30)) seconds = 3.0;

    /* Keys that all land in TARGET_SHARD. */
    int n = 0;
    for (int i = 0; n < NKEYS && i < 1000000; i++) {
        char k[32];
        int len = snprintf(k, sizeof(k), "/stress/key-%d", i);
        if (shard_of(k, (size_t)len) != TARGET_SHARD) continue;
        memcpy(keys[n], k, (size_t)len + 1);
        key_lens[n] = (size_t)len;
        n++;
    }
    if (n < NKEYS) fail("found only %d keys in shard %d", n, TARGET_SHARD);
    /* A derived key for each (as a compressed copy is named), in the same shard. */
    for (int i = 0; i < NKEYS; i++) {
        char *d = keys[NKEYS + i];
        memcpy(d, keys[i], key_lens[i] + 1);
        int j = 0;
        for (; j < 100000; j++) {
            int len = snprintf(d + key_lens[i] + 1, sizeof(keys[0]) - key_lens[i] - 1, "ce=%d", j);
            key_lens[NKEYS + i] = key_lens[i] + 1 + (size_t)len;
            if (shard_of(d, key_lens[NKEYS + i]) == TARGET_SHARD) break;
        }
        if (j == 100000) fail("no derived key of key %d in shard %d", i, TARGET_SHARD);
        snprintf(tags_of[i], sizeof(tags_of[i]), "all g%d b%d", i % GROUPS, i);
    }
    char other[32];
    int other_len = 0;
    for (int i = 0; i < 1000000; i++) {
        other_len = snprintf(other, sizeof(other), "/stress/other-%d", i);
        if (shard_of(other, (size_t)other_len) != TARGET_SHARD) break;
    }
    keys_share_a_shard(other, (size_t)other_len);

    cache = edge_cache_new(CACHE_BYTES);
    deterministic_checks();

    double t0 = mono_now();
    deadline = t0 + seconds;
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&th[i], NULL, hammer, (void *)(i + 1)) != 0) fail("pthread_create");
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    double took = mono_now() - t0;

    /* Afterwards: no flight left behind (a join leads), the bound held, the
     * counters add up, and purging every key empties the cache. */
    for (int k = 0; k < NALL; k++) {
        test_waiter w;
        memset(&w, 0, sizeof(w));
        w.base.wake = on_wake;
        if (edge_cache_flight_join(cache, keys[k], key_lens[k], &w.base) != 0)
            fail("a flight for key %d outlived its leader", k);
        edge_cache_flight_done(cache, keys[k], key_lens[k]);
        if (atomic_load(&leaders[k]) != 0) fail("leader count of key %d is %d", k, atomic_load(&leaders[k]));
    }
    edge_cache_stats st;
    edge_cache_get_stats(cache, &st);
    if (st.bytes > SHARD_BYTES) fail("bytes %llu over the shard's share %d", (unsigned long long)st.bytes, SHARD_BYTES);
    if (st.hits != n_hits || st.hits + st.misses != n_gets)
        fail("stats: %llu hits + %llu misses, the threads counted %llu hits of %llu gets",
             (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)n_hits,
             (unsigned long long)n_gets);
    if (st.evictions == 0 || n_purged == 0 || n_leads == 0 || n_holds_unlinked == 0 || n_wide_purged == 0 ||
        n_stale_held == 0 || n_try_leads == 0)
        fail("the hammer did not exercise everything (evictions %llu, purged %llu, leads %llu, held+unlinked %llu, "
             "purged by key/tag/prefix %llu, stale held %llu, try-leads %llu)",
             (unsigned long long)st.evictions, (unsigned long long)n_purged, (unsigned long long)n_leads,
             (unsigned long long)n_holds_unlinked, (unsigned long long)n_wide_purged,
             (unsigned long long)n_stale_held, (unsigned long long)n_try_leads);
    if (n_waits != n_woken + n_withdrawn + n_late)
        fail("waiters: %llu waited, %llu woken + %llu withdrawn + %llu late", (unsigned long long)n_waits,
             (unsigned long long)n_woken, (unsigned long long)n_withdrawn, (unsigned long long)n_late);
    /* Purging the base keys takes their derived keys too, and empties the cache. */
    for (int k = 0; k < NKEYS; k++)
        n_wide_purged += edge_cache_purge_key(cache, keys[k], key_lens[k], EDGE_PURGE_HARD, virtual_now());
    edge_cache_get_stats(cache, &st);
    if (st.entries != 0 || st.bytes != 0)
        fail("after purging every base key: %llu entries, %llu bytes", (unsigned long long)st.entries,
             (unsigned long long)st.bytes);
    if (st.purged != n_purged + n_wide_purged)
        fail("stats.purged %llu, the purge calls reported %llu + %llu", (unsigned long long)st.purged,
             (unsigned long long)n_purged, (unsigned long long)n_wide_purged);
    edge_cache_free(cache);

    printf("cache_stress: ok: %d threads, %d keys in shard %d, %.2f s, %llu ops: %llu gets (%llu hits), "
           "%llu puts (%llu expiring), %llu purges (%llu found), %llu purges by key/tag/prefix (%llu entries), "
           "%llu stale look-ups (%llu stale), %llu held across purge+put, %llu leads (%llu try-leads), %llu waits "
           "(%llu woken, %llu withdrawn, %llu late), %llu evictions\n",
           THREADS, NKEYS, TARGET_SHARD, took, (unsigned long long)n_ops, (unsigned long long)n_gets,
           (unsigned long long)n_hits, (unsigned long long)n_puts, (unsigned long long)n_expired_puts, (unsigned long long)n_purges,
           (unsigned long long)n_purged, (unsigned long long)n_wide_purges, (unsigned long long)n_wide_purged,
           (unsigned long long)n_stale_looks, (unsigned long long)n_stale_held, (unsigned long long)n_holds_unlinked,
           (unsigned long long)n_leads, (unsigned long long)n_try_leads,
           (unsigned long long)n_waits, (unsigned long long)n_woken, (unsigned long long)n_withdrawn,
           (unsigned long long)n_late, (unsigned long long)st.evictions);
    return 0;
}
