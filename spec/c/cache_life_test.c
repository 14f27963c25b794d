/* Properties of the cache's lifetimes, tags, derived keys and purges
 * (src/cache.c, cache_tags.c, cache_purge.c), through the public API in
 * src/cache.h, single-threaded, on a made-up clock:
 *   - an entry's states across time (fresh, grace, keep, gone), look-ups with
 *     and without EDGE_CACHE_STALE, what counts as a hit or a miss, sweeps;
 *   - soft and hard purges by key, prefix and tag, with their counts and
 *     stats.purged; a held entry never changes under its holder;
 *   - derived keys purged with their base key, and only with theirs;
 *   - tags read from Surrogate-Key and Cache-Tag (separators, duplicates,
 *     the 64-tag and 256-byte limits, none on markers);
 *   - byte accounting (tags counted, back to 0 once all is purged);
 *   - edge_cache_flight_try_lead.
 *
 * Built by `make cache-life-test` twice (build/test/cache_life_test and,
 * under AddressSanitizer + UBSan, build/test/cache_life_test_asan); run by
 * spec/cache_life_spec.lua. Prints one "FAIL" line per failed check and
 * exits 1, or prints "cache_life_test: ok: N checks" and exits 0. */
#include "cache.h"
#include "common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_BYTES (64u << 20)
#define KEY(s) (s), (sizeof(s) - 1)      /* a literal key, '\0's included */

static int checks, failures;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...)
{
    checks++;
    if (ok) return;
    failures++;
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

/* ---- responses ---- */

/* A response with a body and up to two header fields (name NULL: none). */
static void make_resp(edge_response *r, int status, const char *n1, const char *v1, const char *n2, const char *v2)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    if (n1) edge_response_add_header(r, n1, strlen(n1), v1, strlen(v1));
    if (n2) edge_response_add_header(r, n2, strlen(n2), v2, strlen(v2));
    edge_buf_append(&r->body, "body", 4);
}

static void free_resp(edge_response *r)
{
    edge_buf_free(&r->data);
    edge_buf_free(&r->body);
    free(r->headers);
}

static int put_life(edge_cache *c, const char *key, size_t klen, const char *n1, const char *v1, double now,
                    double ttl, double grace, double keep)
{
    edge_response r;
    make_resp(&r, 200, n1, v1, NULL, NULL);
    edge_cache_life life = {.ttl = ttl, .grace = grace, .keep = keep};
    int rc = edge_cache_put_life(c, key, klen, &r, now, &life);
    free_resp(&r);
    return rc;
}

/* A fresh entry for an hour, tagged by a Surrogate-Key field (NULL: none). */
static void put_tagged(edge_cache *c, const char *key, size_t klen, const char *skey, double now)
{
    if (put_life(c, key, klen, skey ? "surrogate-key" : NULL, skey, now, 3600, 0, 0) != EDGE_OK)
        check(0, "put of '%.*s' refused", (int)klen, key);
}

/* 1 when key is there at now, fresh or (with stale) held. */
static int present(edge_cache *c, const char *key, size_t klen, double now, unsigned flags)
{
    edge_cache_entry *e = edge_cache_lookup(c, key, klen, now, flags);
    if (e) edge_cache_release(e);
    return e != NULL;
}

static int state_at(edge_cache *c, const char *key, size_t klen, double now)
{
    edge_cache_entry *e = edge_cache_lookup(c, key, klen, now, EDGE_CACHE_STALE);
    if (e == NULL) return EDGE_CACHE_GONE;
    int st = edge_cache_entry_state(e, now);
    edge_cache_release(e);
    return st;
}

static edge_cache_stats stats(edge_cache *c)
{
    edge_cache_stats st;
    edge_cache_get_stats(c, &st);
    return st;
}

/* ---- lifetimes ---- */

static void test_states(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    /* ttl 10, grace 5, keep 20 from t=100: fresh [100,110), grace [110,115), keep [110,130). */
    check(put_life(c, KEY("/life"), NULL, NULL, 100, 10, 5, 20) == EDGE_OK, "put_life");
    const struct { double t; int state; } want[] = {
        {100, EDGE_CACHE_FRESH}, {109.9, EDGE_CACHE_FRESH}, {110, EDGE_CACHE_GRACE}, {114.9, EDGE_CACHE_GRACE},
        {115, EDGE_CACHE_KEEP}, {129.9, EDGE_CACHE_KEEP},
    };
    for (size_t i = 0; i < EDGE_ARRAY_LEN(want); i++) {
        check(state_at(c, KEY("/life"), want[i].t) == want[i].state, "state at t=%g: %d, expected %d", want[i].t,
              state_at(c, KEY("/life"), want[i].t), want[i].state);
        int fresh = want[i].state == EDGE_CACHE_FRESH;
        check(present(c, KEY("/life"), want[i].t, 0) == fresh, "peek at t=%g: fresh only", want[i].t);
        check(present(c, KEY("/life"), want[i].t, EDGE_CACHE_COUNT) == fresh, "get at t=%g: fresh only", want[i].t);
    }
    check(stats(c).entries == 1, "a stale entry stays held after look-ups without STALE");
    check(state_at(c, KEY("/life"), 130) == EDGE_CACHE_GONE, "gone at expiry + max(grace, keep)");
    check(stats(c).entries == 0, "the look-up that finds it gone drops it");

    /* Grace longer than keep: held until the end of grace. */
    check(put_life(c, KEY("/grace"), NULL, NULL, 100, 10, 20, 5) == EDGE_OK, "put_life grace > keep");
    check(state_at(c, KEY("/grace"), 129.9) == EDGE_CACHE_GRACE, "in grace at 129.9");
    check(state_at(c, KEY("/grace"), 130) == EDGE_CACHE_GONE, "gone at 130");

    /* edge_cache_put is { ttl, 0, 0 }: gone at expiry, even with STALE. */
    edge_response r;
    make_resp(&r, 200, NULL, NULL, NULL, NULL);
    check(edge_cache_put(c, KEY("/plain"), &r, 100, 10) == EDGE_OK, "put");
    check(state_at(c, KEY("/plain"), 109.9) == EDGE_CACHE_FRESH, "put: fresh before its ttl");
    check(state_at(c, KEY("/plain"), 110) == EDGE_CACHE_GONE, "put: gone at its ttl");
    edge_cache_life bad[] = {{0, 10, 10}, {-1, 10, 10}, {NAN, 10, 10}};
    for (size_t i = 0; i < EDGE_ARRAY_LEN(bad); i++)
        check(edge_cache_put_life(c, KEY("/bad"), &r, 100, &bad[i]) == EDGE_ERROR, "ttl %g refused", bad[i].ttl);
    edge_cache_life odd = {10, -5, NAN};
    check(edge_cache_put_life(c, KEY("/odd"), &r, 100, &odd) == EDGE_OK, "negative grace, NaN keep: stored");
    check(state_at(c, KEY("/odd"), 110) == EDGE_CACHE_GONE, "negative grace and NaN keep count as 0");
    free_resp(&r);
    check(stats(c).entries == 0 && stats(c).bytes == 0, "empty at the end");
    edge_cache_free(c);
}

static void test_counting(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    put_life(c, KEY("/n"), NULL, NULL, 100, 10, 5, 20);
    const unsigned both = EDGE_CACHE_COUNT | EDGE_CACHE_STALE;
    const struct { double t; unsigned flags; int hit, miss; } looks[] = {
        {105, EDGE_CACHE_COUNT, 1, 0}, {105, both, 1, 0}, {105, 0, 0, 0},        /* fresh */
        {112, EDGE_CACHE_COUNT, 0, 1}, {112, both, 1, 0}, {112, EDGE_CACHE_STALE, 0, 0},  /* grace */
        {120, EDGE_CACHE_COUNT, 0, 1}, {120, both, 0, 1},                         /* keep: a miss */
        {130, both, 0, 1},                                                        /* gone */
    };
    for (size_t i = 0; i < EDGE_ARRAY_LEN(looks); i++) {
        edge_cache_stats a = stats(c);
        present(c, KEY("/n"), looks[i].t, looks[i].flags);
        edge_cache_stats b = stats(c);
        check(b.hits - a.hits == (uint64_t)looks[i].hit && b.misses - a.misses == (uint64_t)looks[i].miss,
              "look %zu (t=%g, flags %u): %llu hits, %llu misses; expected %d, %d", i, looks[i].t, looks[i].flags,
              (unsigned long long)(b.hits - a.hits), (unsigned long long)(b.misses - a.misses), looks[i].hit,
              looks[i].miss);
    }
    /* Markers (Vary 0, pass 1) count neither hit nor miss when found. */
    for (int status = 0; status <= 1; status++) {
        edge_response m;
        make_resp(&m, status, status ? NULL : "vary", "accept", NULL, NULL);
        edge_cache_life life = {10, 0, 0};
        check(edge_cache_put_life(c, KEY("/marker"), &m, 200, &life) == EDGE_OK, "marker %d stored", status);
        free_resp(&m);
        edge_cache_stats a = stats(c);
        edge_cache_entry *e = edge_cache_lookup(c, KEY("/marker"), 205, both);
        edge_cache_stats b = stats(c);
        check(e && edge_cache_entry_is_marker(e) && edge_cache_entry_is_pass(e) == (status == 1) &&
                  edge_cache_entry_is_vary(e) == (status == 0),
              "marker %d found as a marker of its kind", status);
        if (e) edge_cache_release(e);
        check(b.hits == a.hits && b.misses == a.misses, "marker %d counted as a hit or miss", status);
    }
    edge_cache_free(c);
}

static void test_sweep(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    put_life(c, KEY("/s-fresh"), NULL, NULL, 100, 100, 0, 0);
    put_life(c, KEY("/s-grace"), NULL, NULL, 100, 10, 50, 0);
    put_life(c, KEY("/s-keep"), NULL, NULL, 100, 10, 0, 50);
    put_life(c, KEY("/s-gone"), NULL, NULL, 100, 10, 5, 5);
    size_t dropped = edge_cache_sweep(c, 120, 1 << 20);
    check(dropped == 1, "sweep at 120 dropped %zu entries, expected 1 (the one past all its lifetimes)", dropped);
    check(stats(c).entries == 3, "3 entries held after the sweep");
    check(state_at(c, KEY("/s-grace"), 120) == EDGE_CACHE_GRACE, "the grace entry survives the sweep");
    check(state_at(c, KEY("/s-keep"), 120) == EDGE_CACHE_KEEP, "the keep entry survives the sweep");
    check(edge_cache_sweep(c, 160, 1 << 20) == 2, "sweep at 160 drops grace and keep entries");
    check(stats(c).entries == 1 && present(c, KEY("/s-fresh"), 160, 0), "the fresh one stays");
    edge_cache_free(c);
}

/* ---- purges ---- */

static void test_purge_key(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    /* Soft: stale now, served in grace, purged counted. */
    put_life(c, KEY("/k"), NULL, NULL, 100, 60, 30, 0);
    check(edge_cache_purge_key(c, KEY("/k"), EDGE_PURGE_SOFT, 110) == 1, "soft purge_key counts 1");
    check(!present(c, KEY("/k"), 110, 0), "soft-purged entry is no longer fresh");
    check(state_at(c, KEY("/k"), 139.9) == EDGE_CACHE_GRACE, "soft-purged entry is in grace until now + grace");
    check(state_at(c, KEY("/k"), 140) == EDGE_CACHE_GONE, "and gone after");
    check(stats(c).purged == 1, "stats.purged %llu, expected 1", (unsigned long long)stats(c).purged);

    /* Soft on a stale entry keeps its (earlier) expiry: min(expires_at, now). */
    put_life(c, KEY("/k"), NULL, NULL, 100, 10, 30, 0);
    check(edge_cache_purge_key(c, KEY("/k"), EDGE_PURGE_SOFT, 120) == 1, "soft purge of a stale entry counts");
    check(state_at(c, KEY("/k"), 139.9) == EDGE_CACHE_GRACE, "its grace still ends at 140");

    /* Soft without grace or keep: gone at once (nothing could serve it). */
    put_life(c, KEY("/k0"), NULL, NULL, 100, 60, 0, 0);
    check(edge_cache_purge_key(c, KEY("/k0"), EDGE_PURGE_SOFT, 110) == 1, "soft purge without grace counts 1");
    check(stats(c).entries == 1, "and removes it");

    /* Hard. */
    put_life(c, KEY("/k"), NULL, NULL, 100, 60, 30, 30);
    check(edge_cache_purge_key(c, KEY("/k"), EDGE_PURGE_HARD, 110) == 1, "hard purge_key counts 1");
    check(state_at(c, KEY("/k"), 110) == EDGE_CACHE_GONE, "hard-purged entry is gone even for STALE");
    check(edge_cache_purge_key(c, KEY("/k"), EDGE_PURGE_HARD, 110) == 0, "purge of nothing counts 0");
    check(edge_cache_purge_key(c, KEY("/absent"), EDGE_PURGE_SOFT, 110) == 0, "soft purge of nothing counts 0");

    /* An entry past all its lifetimes is not counted. */
    put_life(c, KEY("/old"), NULL, NULL, 100, 1, 0, 0);
    check(edge_cache_purge_key(c, KEY("/old"), EDGE_PURGE_HARD, 200) == 0, "a dead entry is not counted");
    check(stats(c).purged == 4, "stats.purged %llu, expected 4", (unsigned long long)stats(c).purged);
    check(stats(c).entries == 0 && stats(c).bytes == 0, "empty after purging");

    /* edge_cache_purge: exact key, hard, 1 when there; counts in stats.purged. */
    put_tagged(c, KEY("/x"), NULL, 100);
    put_tagged(c, KEY("/x\0ce=br"), NULL, 100);
    check(edge_cache_purge(c, KEY("/x")) == 1 && edge_cache_purge(c, KEY("/x")) == 0, "edge_cache_purge: 1 then 0");
    check(present(c, KEY("/x\0ce=br"), 100, 0), "edge_cache_purge leaves derived keys");
    check(stats(c).purged == 5, "edge_cache_purge counts in stats.purged");
    edge_cache_free(c);
}

/* A held entry never changes: a soft purge replaces it with a stale copy. */
static void test_soft_purge_held(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    put_life(c, KEY("/held"), "cache-tag", "t", 100, 60, 30, 0);
    edge_cache_entry *held = edge_cache_get(c, KEY("/held"), 100);
    check(held != NULL, "get /held");
    uint64_t bytes = stats(c).bytes;
    check(edge_cache_purge_tag(c, KEY("t"), EDGE_PURGE_SOFT, 110) == 1, "soft purge_tag of a held entry counts 1");
    check(held && held->expires_at == 160, "the held entry kept its expiry (%g)", held ? held->expires_at : 0);
    edge_cache_entry *now = edge_cache_lookup(c, KEY("/held"), 110, EDGE_CACHE_STALE);
    check(now && now != held && now->expires_at == 110, "the cache holds a stale copy");
    check(now && now->body_len == 4 && memcmp(edge_cache_entry_body(now), "body", 4) == 0, "the copy's body");
    check(stats(c).bytes == bytes && stats(c).entries == 1, "the copy counts as the original did");
    /* The copy is in the tag's list in the original's place. */
    check(edge_cache_purge_tag(c, KEY("t"), EDGE_PURGE_HARD, 110) == 1, "the copy is tagged");
    check(stats(c).entries == 0 && stats(c).bytes == 0, "empty after the hard purge");
    check(held && memcmp(edge_cache_entry_body(held), "body", 4) == 0, "held entry intact after all");
    if (now) edge_cache_release(now);
    if (held) edge_cache_release(held);
    edge_cache_free(c);
}

static void test_purge_prefix(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    char key[64];
    for (int i = 0; i < 3000; i++) {        /* enough to grow every shard's table past one batch */
        int n = snprintf(key, sizeof(key), "%s/%d", i % 3 ? "/p" : "/q", i);
        put_life(c, key, (size_t)n, NULL, NULL, 100, 60, i % 2 ? 30 : 0, 0);
    }
    size_t p = 2000, q = 1000;
    check(edge_cache_purge_prefix(c, KEY("/p/"), EDGE_PURGE_SOFT, 110) == p, "soft purge_prefix /p/ counts %zu", p);
    check(stats(c).entries == p / 2 + q, "soft purge drops those without grace: %llu entries",
          (unsigned long long)stats(c).entries);
    check(!present(c, KEY("/p/1"), 110, 0) && present(c, KEY("/p/1"), 110, EDGE_CACHE_STALE),
          "a soft-purged /p/ entry with grace is stale, held");
    check(present(c, KEY("/q/3"), 110, 0), "/q/ untouched");
    check(edge_cache_purge_prefix(c, KEY("/p/"), EDGE_PURGE_HARD, 110) == p / 2, "hard purge_prefix /p/ counts the rest");
    check(stats(c).entries == q, "only /q/ left");
    check(edge_cache_purge_prefix(c, KEY("/nothing"), EDGE_PURGE_HARD, 110) == 0, "a prefix nothing has counts 0");
    check(edge_cache_purge_prefix(c, "", 0, EDGE_PURGE_HARD, 110) == q, "the empty prefix purges all");
    check(stats(c).entries == 0 && stats(c).bytes == 0, "empty");
    check(stats(c).purged == p + p / 2 + q, "stats.purged %llu", (unsigned long long)stats(c).purged);
    edge_cache_free(c);
}

static void test_purge_tag(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    char key[64];
    for (int i = 0; i < 3000; i++) {
        int n = snprintf(key, sizeof(key), "/t/%d", i);
        const char *tags = i % 3 == 0 ? "all three" : i % 3 == 1 ? "all one" : "other";
        put_life(c, key, (size_t)n, "surrogate-key", tags, 100, 60, 30, 0);
    }
    check(edge_cache_purge_tag(c, KEY("three"), EDGE_PURGE_SOFT, 110) == 1000, "soft purge_tag three counts 1000");
    check(edge_cache_purge_tag(c, KEY("three"), EDGE_PURGE_SOFT, 111) == 1000, "soft-purged entries stay tagged");
    check(stats(c).entries == 3000, "soft purge with grace keeps entries");
    check(!present(c, KEY("/t/3"), 110, 0) && present(c, KEY("/t/4"), 110, 0), "three stale, one fresh");
    check(edge_cache_purge_tag(c, KEY("all"), EDGE_PURGE_HARD, 110) == 2000, "hard purge_tag all counts 2000");
    check(stats(c).entries == 1000, "only 'other' left");
    check(edge_cache_purge_tag(c, KEY("all"), EDGE_PURGE_HARD, 110) == 0, "the tag is empty now");
    check(edge_cache_purge_tag(c, KEY("thre"), EDGE_PURGE_HARD, 110) == 0, "tags match whole, not as prefixes");
    check(edge_cache_purge_tag(c, KEY("Other"), EDGE_PURGE_HARD, 110) == 0, "tags are case-sensitive");
    check(edge_cache_purge_tag(c, "", 0, EDGE_PURGE_HARD, 110) == 0, "the empty tag purges nothing");
    check(edge_cache_purge_tag(c, KEY("other"), EDGE_PURGE_HARD, 110) == 1000, "purge_tag other");
    check(stats(c).entries == 0 && stats(c).bytes == 0, "empty");
    edge_cache_free(c);
}

/* ---- derived keys ---- */

static void put_family(edge_cache *c, double now)
{
    put_tagged(c, KEY("a"), NULL, now);
    put_tagged(c, KEY("a\0vary=1"), NULL, now);
    put_tagged(c, KEY("a\0vary=1\0ce=br"), NULL, now);
    put_tagged(c, KEY("a\0ce=gzip"), NULL, now);
    put_tagged(c, KEY("ab"), NULL, now);
    put_tagged(c, KEY("ab\0ce=br"), NULL, now);
    put_tagged(c, KEY("b\0a"), NULL, now);
}

static void test_derived(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    put_family(c, 100);
    check(edge_cache_purge_key(c, KEY("a"), EDGE_PURGE_HARD, 100) == 4, "purge_key a: itself and 3 derived");
    check(stats(c).entries == 3, "ab, ab's copy and b\\0a left (%llu)", (unsigned long long)stats(c).entries);
    check(present(c, KEY("ab\0ce=br"), 100, 0) && present(c, KEY("ab"), 100, 0), "a does not purge ab's");
    check(edge_cache_purge_key(c, KEY("a"), EDGE_PURGE_HARD, 100) == 0, "nothing of a left");
    edge_cache_purge_prefix(c, "", 0, EDGE_PURGE_HARD, 100);

    /* A derived key purges what derives from it, not its siblings. */
    put_family(c, 100);
    check(edge_cache_purge_key(c, KEY("a\0vary=1"), EDGE_PURGE_HARD, 100) == 2, "purge_key of a variant: it and its copy");
    check(present(c, KEY("a"), 100, 0) && present(c, KEY("a\0ce=gzip"), 100, 0), "the base and its other copy stay");

    /* Derived entries without their base are still found. */
    check(edge_cache_purge(c, KEY("a")) == 1, "drop a alone");
    check(edge_cache_purge_key(c, KEY("a"), EDGE_PURGE_HARD, 100) == 1, "purge_key a finds its orphan copy");
    edge_cache_purge_prefix(c, "", 0, EDGE_PURGE_HARD, 100);

    /* Soft. */
    put_family(c, 100);
    edge_cache_purge(c, KEY("a\0ce=gzip"));
    put_life(c, KEY("a\0ce=gzip"), NULL, NULL, 100, 60, 30, 0);
    check(edge_cache_purge_key(c, KEY("a"), EDGE_PURGE_SOFT, 110) == 4, "soft purge_key a counts 4");
    check(present(c, KEY("a\0ce=gzip"), 110, EDGE_CACHE_STALE) && !present(c, KEY("a\0ce=gzip"), 110, 0),
          "the copy with grace is stale and held");
    check(stats(c).entries == 4, "those without grace went; %llu left", (unsigned long long)stats(c).entries);
    edge_cache_purge_prefix(c, "", 0, EDGE_PURGE_HARD, 110);
    check(stats(c).entries == 0 && stats(c).bytes == 0, "empty");

    /* The empty key's derived keys; no key at all (NULL, 0). */
    put_tagged(c, KEY("\0x"), NULL, 100);
    check(edge_cache_purge_key(c, KEY(""), EDGE_PURGE_HARD, 100) == 1, "purge_key of the empty key takes \\0x");
    check(edge_cache_purge_key(c, NULL, 0, EDGE_PURGE_HARD, 100) == 0, "purge_key(NULL, 0) purges nothing");
    check(edge_cache_purge_tag(c, NULL, 0, EDGE_PURGE_HARD, 100) == 0, "purge_tag(NULL, 0) purges nothing");
    put_tagged(c, KEY("/n"), NULL, 100);
    check(edge_cache_purge_prefix(c, NULL, 0, EDGE_PURGE_HARD, 100) == 1, "purge_prefix(NULL, 0) purges all");

    /* A derived key's base is not a tag anyone can name. */
    put_family(c, 100);
    check(edge_cache_purge_tag(c, KEY("a"), EDGE_PURGE_HARD, 100) == 0, "purge_tag a finds no derived entry");
    edge_cache_free(c);
}

/* ---- tags ---- */

/* How many entries a hard purge of tag takes after one entry for a
 * response of that status with the given fields was stored; empties the cache. */
static size_t tagged(int status, const char *n1, const char *v1, const char *n2, const char *v2, const char *tag)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    edge_response r;
    make_resp(&r, status, n1, v1, n2, v2);
    edge_cache_life life = {60, 0, 0};
    if (edge_cache_put_life(c, KEY("/tp"), &r, 100, &life) != EDGE_OK) check(0, "put for tag '%s' refused", tag);
    free_resp(&r);
    size_t n = edge_cache_purge_tag(c, tag, strlen(tag), EDGE_PURGE_HARD, 100);
    edge_cache_free(c);
    return n;
}

static void test_tag_parsing(void)
{
    const char *sk = " \ta  b\tc,d ", *ct = " x , y z,,\tw\t,";
    const char *in_sk[] = {"a", "b", "c,d"}, *not_sk[] = {"c", "d", "a  b", " a", ""};
    const char *in_ct[] = {"x", "y z", "w"}, *not_ct[] = {"y", "z", " x", "x ", "\tw"};
    for (size_t i = 0; i < EDGE_ARRAY_LEN(in_sk); i++) {
        check(tagged(200, "surrogate-key", sk, NULL, NULL, in_sk[i]) == 1, "surrogate-key: '%s' is a tag", in_sk[i]);
        check(tagged(200, "surrogate-key", sk, "cache-tag", ct, in_sk[i]) == 1, "both fields: '%s'", in_sk[i]);
    }
    for (size_t i = 0; i < EDGE_ARRAY_LEN(not_sk); i++)
        check(tagged(200, "surrogate-key", sk, NULL, NULL, not_sk[i]) == 0, "surrogate-key: '%s' is no tag", not_sk[i]);
    for (size_t i = 0; i < EDGE_ARRAY_LEN(in_ct); i++) {
        check(tagged(200, "cache-tag", ct, NULL, NULL, in_ct[i]) == 1, "cache-tag: '%s' is a tag", in_ct[i]);
        check(tagged(200, "surrogate-key", sk, "cache-tag", ct, in_ct[i]) == 1, "both fields: '%s'", in_ct[i]);
    }
    for (size_t i = 0; i < EDGE_ARRAY_LEN(not_ct); i++)
        check(tagged(200, "cache-tag", ct, NULL, NULL, not_ct[i]) == 0, "cache-tag: '%s' is no tag", not_ct[i]);
    check(tagged(200, "surrogate-key", "one", "surrogate-key", "two", "two") == 1, "a second Surrogate-Key field is read");
    check(tagged(200, "cache-tag", "one", "cache-tag", "two", "two") == 1, "a second Cache-Tag field is read");
    check(tagged(200, "surrogate-control", "max-age=1", "x-cache-tag", "z", "z") == 0, "other fields are not read");
    check(tagged(200, "surrogate-key", "max-age=1", NULL, NULL, "max-age=1") == 1, "any bytes make a tag");
    check(tagged(EDGE_CACHE_MARKER_STATUS, "surrogate-key", "m", NULL, NULL, "m") == 0, "a Vary marker has no tags");
    check(tagged(EDGE_CACHE_PASS_STATUS, "cache-tag", "m", NULL, NULL, "m") == 0, "a pass marker has no tags");

    /* Limits: the first 64 distinct tags; tags of up to 256 bytes. */
    char many[70 * 8] = "", tag[300];
    for (int i = 0; i < 70; i++) snprintf(many + strlen(many), sizeof(many) - strlen(many), "t%d ", i);
    check(tagged(200, "surrogate-key", many, NULL, NULL, "t63") == 1, "the 64th tag is taken");
    check(tagged(200, "surrogate-key", many, NULL, NULL, "t64") == 0, "the 65th tag is not");
    check(tagged(200, "surrogate-key", many, "cache-tag", "late", "late") == 0, "nor any after, in another field");
    char dups[1024] = "";
    for (int i = 0; i < 100; i++) strcat(dups, "d ");
    strcat(dups, "e");
    check(tagged(200, "surrogate-key", dups, NULL, NULL, "e") == 1, "repeats of a tag do not use up the limit");
    memset(tag, 'L', 256);
    tag[256] = '\0';
    char field[600];
    snprintf(field, sizeof(field), "s %s", tag);
    check(tagged(200, "surrogate-key", field, NULL, NULL, tag) == 1, "a 256-byte tag is taken");
    snprintf(field, sizeof(field), "s %sL z", tag);
    check(tagged(200, "surrogate-key", field, NULL, NULL, "z") == 1, "a tag after a 257-byte one is taken");
    tag[256] = 'L';
    tag[257] = '\0';
    check(tagged(200, "surrogate-key", field, NULL, NULL, tag) == 0, "a 257-byte tag is not");

    /* A tag named twice is one link: a soft purge counts the entry once. */
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    edge_response r;
    make_resp(&r, 200, "surrogate-key", "d d d", "cache-tag", "d, d");
    edge_cache_life life = {60, 30, 0};
    edge_cache_put_life(c, KEY("/dup"), &r, 100, &life);
    free_resp(&r);
    check(edge_cache_purge_tag(c, KEY("d"), EDGE_PURGE_SOFT, 100) == 1, "a repeated tag counts its entry once");
    edge_cache_free(c);
}

/* ---- bytes ---- */

static void test_bytes(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    edge_response plain, tags;
    make_resp(&plain, 200, "content-type", "text/plain", NULL, NULL);
    char many[64 * 8] = "";
    for (int i = 0; i < 64; i++) snprintf(many + strlen(many), sizeof(many) - strlen(many), "t%02d ", i);
    make_resp(&tags, 200, "content-type", "text/plain", "surrogate-key", many);
    edge_cache_life life = {60, 30, 30};

    size_t plain_size = edge_cache_object_size(2, &plain), tags_size = edge_cache_object_size(2, &tags);
    size_t field = strlen("surrogate-key") + strlen(many) + sizeof(edge_header);
    check(tags_size >= plain_size + field + 64 * (32 + 3), "64 tags weigh their links and names: %zu vs %zu",
          tags_size, plain_size);
    edge_cache_put_life(c, KEY("/p"), &plain, 100, &life);
    check(stats(c).bytes == plain_size, "an untagged entry counts edge_cache_object_size (%llu vs %zu)",
          (unsigned long long)stats(c).bytes, plain_size);
    edge_cache_put_life(c, KEY("/t"), &tags, 100, &life);
    check(stats(c).bytes == plain_size + tags_size, "a tagged entry counts edge_cache_object_size");
    edge_cache_put_life(c, KEY("/t\0ce=br"), &plain, 100, &life);
    uint64_t derived = stats(c).bytes - plain_size - tags_size;
    check(derived > plain_size + 32 && derived < plain_size + 256, "a derived entry counts its link to /t: %llu vs %zu",
          (unsigned long long)derived, plain_size);

    /* Tags count against the largest entry. */
    edge_cache *small = edge_cache_new(CACHE_BYTES);
    edge_cache_set_max_object(small, plain_size + field);
    check(edge_cache_put_life(small, KEY("/p"), &plain, 100, &life) == EDGE_OK, "the untagged entry fits");
    check(edge_cache_put_life(small, KEY("/t"), &tags, 100, &life) == EDGE_ERROR, "the tagged one does not");
    edge_cache_free(small);

    /* Soft purges, a held copy, replacements: all purged, nothing counted. */
    edge_cache_entry *held = edge_cache_get(c, KEY("/t"), 100);
    check(edge_cache_purge_tag(c, KEY("t05"), EDGE_PURGE_SOFT, 110) == 1, "soft purge of the held tagged entry");
    edge_cache_put_life(c, KEY("/p"), &tags, 110, &life);                  /* a replacement, now tagged */
    check(edge_cache_purge_tag(c, KEY("t63"), EDGE_PURGE_HARD, 110) == 2, "both tagged entries purged");
    check(edge_cache_purge_key(c, KEY("/t"), EDGE_PURGE_HARD, 110) == 1, "the derived one with its base");
    check(stats(c).entries == 0 && stats(c).bytes == 0, "bytes back to 0: %llu entries, %llu bytes",
          (unsigned long long)stats(c).entries, (unsigned long long)stats(c).bytes);
    if (held) edge_cache_release(held);

    /* Eviction unlinks tags: a cache of 16 x 8 KiB filled with tagged entries. */
    edge_cache *tiny = edge_cache_new(16 * 8192);
    char key[32];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(key, sizeof(key), "/e/%d", i);
        edge_cache_put_life(tiny, key, (size_t)n, &tags, 100, &life);
    }
    edge_cache_stats st = stats(tiny);
    check(st.evictions > 0 && st.entries < 2000 && st.bytes <= 16 * 8192, "evicted to stay in bounds");
    check(edge_cache_purge_tag(tiny, KEY("t00"), EDGE_PURGE_HARD, 100) == st.entries,
          "purge_tag finds exactly the entries still held (%llu)", (unsigned long long)st.entries);
    check(stats(tiny).bytes == 0, "and leaves no bytes");
    edge_cache_free(tiny);

    free_resp(&plain);
    free_resp(&tags);
    edge_cache_free(c);
}

/* ---- flights ---- */

typedef struct test_waiter {
    edge_cache_waiter base;
    int woken;
} test_waiter;

static void on_wake(edge_cache_waiter *w)
{
    ((test_waiter *)(void *)w)->woken++;
}

static void test_try_lead(void)
{
    edge_cache *c = edge_cache_new(CACHE_BYTES);
    test_waiter w = {.base.wake = on_wake}, lead = {.base.wake = on_wake};
    check(edge_cache_flight_try_lead(c, KEY("/f")) == EDGE_OK, "try_lead with no flight leads");
    check(edge_cache_flight_try_lead(c, KEY("/f")) == EDGE_AGAIN, "a second try_lead does not");
    check(edge_cache_flight_join(c, KEY("/f"), &w.base) == EDGE_AGAIN, "a join waits for the try_lead's flight");
    check(edge_cache_flight_try_lead(c, KEY("/g")) == EDGE_OK, "another key's try_lead leads");
    edge_cache_flight_done(c, KEY("/f"));
    check(w.woken == 1, "done woke the waiter once (%d)", w.woken);
    check(edge_cache_flight_try_lead(c, KEY("/f")) == EDGE_OK, "try_lead after done leads");
    edge_cache_flight_done(c, KEY("/f"));
    check(edge_cache_flight_join(c, KEY("/f"), &lead.base) == EDGE_OK, "join leads");
    check(edge_cache_flight_try_lead(c, KEY("/f")) == EDGE_AGAIN, "try_lead does not lead a joined flight");
    edge_cache_flight_done(c, KEY("/f"));
    check(lead.woken == 0 && w.woken == 1, "try_lead joined nothing: done woke no one");
    edge_cache_flight_done(c, KEY("/g"));
    edge_cache_free(c);
}

int main(void)
{
    test_states();
    test_counting();
    test_sweep();
    test_purge_key();
    test_soft_purge_held();
    test_purge_prefix();
    test_purge_tag();
    test_derived();
    test_tag_parsing();
    test_bytes();
    test_try_lead();
    if (failures) {
        printf("cache_life_test: FAIL: %d of %d checks\n", failures, checks);
        return 1;
    }
    printf("cache_life_test: ok: %d checks\n", checks);
    return 0;
}
