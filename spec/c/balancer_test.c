/* Properties of src/balancer.c, through its public API (balancer.h): smooth
 * weighted round robin, least connections, consistent hashing, the tried
 * set, the retry cap and passive health. Times are made up: no clock.
 *
 * Built by `make balancer-test` twice (build/test/balancer_test and, under
 * AddressSanitizer + UBSan, build/test/balancer_test_asan); run by
 * spec/balancer_spec.lua. Prints one "FAIL" line per failed check and exits
 * 1, or prints "balancer_test: ok: N checks" and exits 0. */
#include "balancer.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A definition of n servers named "s<i>.test:80"+i with the given weights
 * (NULL: all 1), backups marked by a string of 'b' and '.' (NULL: none). */
static void make_def(edge_upstream_def *def, edge_balance balance, size_t n, const int *weights,
                     const char *backups)
{
    edge_upstream_def_init(def);
    def->balance = balance;
    def->n_servers = n;
    def->servers = calloc(n, sizeof(*def->servers));
    for (size_t i = 0; i < n; i++) {
        char host[32];
        snprintf(host, sizeof(host), "s%zu.test", i);
        def->servers[i].host = strdup(host);
        def->servers[i].port = (uint16_t)(8000 + i);
        def->servers[i].weight = (uint16_t)(weights ? weights[i] : 1);
        def->servers[i].backup = backups != NULL && backups[i] == 'b';
    }
}

static edge_balancer *new_balancer(edge_balance balance, size_t n, const int *weights, const char *backups)
{
    edge_upstream_def def;
    make_def(&def, balance, n, weights, backups);
    edge_balancer *b = edge_balancer_new(&def);
    edge_upstream_def_free(&def);     /* the balancer keeps its own copy */
    if (b == NULL) {
        printf("FAIL: edge_balancer_new returned NULL\n");
        exit(1);
    }
    return b;
}

/* One pick and its done(OK) at once: a request that did not overlap others. */
static int pick_once(edge_balancer *b, const char *key, double now)
{
    uint64_t tried = 0;
    int s = edge_balancer_pick(b, key, key ? strlen(key) : 0, &tried, now, NULL);
    if (s >= 0) edge_balancer_done(b, s, EDGE_PEER_OK, now);
    return s;
}

/* Picks with a fresh tried set until want comes up (the others done OK at
 * once); leaves want picked, not done. 0 when it did not come up in 10. */
static int pick_until(edge_balancer *b, int want, double now)
{
    for (int i = 0; i < 10; i++) {
        uint64_t t = 0;
        int s = edge_balancer_pick(b, NULL, 0, &t, now, NULL);
        if (s == want) return 1;
        if (s >= 0) edge_balancer_done(b, s, EDGE_PEER_OK, now);
    }
    return 0;
}

/* ---- round robin ---- */

static void test_swrr(void)
{
    int w[] = {5, 1, 1};
    edge_balancer *b = new_balancer(EDGE_BALANCE_ROUND_ROBIN, 3, w, NULL);
    const int want[] = {0, 0, 1, 0, 2, 0, 0};
    for (int round = 0; round < 3; round++) {
        char got[8] = {0};
        for (int i = 0; i < 7; i++) got[i] = (char)('a' + pick_once(b, NULL, 0));
        int same = 1;
        for (int i = 0; i < 7; i++) same &= got[i] == 'a' + want[i];
        check(same, "swrr 5,1,1 round %d: got %s, want aabacaa", round, got);
    }
    edge_balancer_free(b);

    b = new_balancer(EDGE_BALANCE_ROUND_ROBIN, 3, w, NULL);
    int count[3] = {0};
    for (int i = 0; i < 7000; i++) count[pick_once(b, NULL, 0)]++;
    check(count[0] == 5000 && count[1] == 1000 && count[2] == 1000,
          "swrr 5,1,1 over 7000 picks: %d %d %d, want 5000 1000 1000", count[0], count[1], count[2]);
    edge_balancer_free(b);
}

/* ---- least connections ---- */

static void test_least_conn(void)
{
    edge_balancer *b = new_balancer(EDGE_BALANCE_LEAST_CONN, 3, NULL, NULL);
    /* Three overlapping requests land on three different servers. */
    uint64_t t0 = 0, t1 = 0, t2 = 0;
    int a = edge_balancer_pick(b, NULL, 0, &t0, 0, NULL);
    int c = edge_balancer_pick(b, NULL, 0, &t1, 0, NULL);
    int d = edge_balancer_pick(b, NULL, 0, &t2, 0, NULL);
    check(a != c && c != d && a != d, "least_conn: 3 overlapping picks on %d %d %d, want 3 servers", a, c, d);
    /* Finish one: the next request goes to the one now idle. */
    edge_balancer_done(b, c, EDGE_PEER_OK, 0);
    uint64_t t3 = 0;
    int e = edge_balancer_pick(b, NULL, 0, &t3, 0, NULL);
    check(e == c, "least_conn: next pick %d, want the idle server %d", e, c);
    check(edge_balancer_active(b, e) == 1, "least_conn: active(%d) = %u, want 1", e,
          edge_balancer_active(b, e));
    edge_balancer_done(b, a, EDGE_PEER_OK, 0);
    edge_balancer_done(b, d, EDGE_PEER_OK, 0);
    edge_balancer_done(b, e, EDGE_PEER_OK, 0);
    for (int i = 0; i < 3; i++)
        check(edge_balancer_active(b, i) == 0, "least_conn: active(%d) = %u after done, want 0", i,
              edge_balancer_active(b, i));
    /* With nothing in flight every server ties: round robin among them. */
    int seen[3] = {0};
    for (int i = 0; i < 300; i++) seen[pick_once(b, NULL, 0)]++;
    for (int i = 0; i < 3; i++)
        check(seen[i] >= 99 && seen[i] <= 101, "least_conn: ties over 300 picks gave s%d %d, want 100",
              i, seen[i]);
    edge_balancer_free(b);

    /* Weights 3 and 1: with 4 requests held, 3 go to the first and 1 to the second. */
    int w[] = {3, 1};
    b = new_balancer(EDGE_BALANCE_LEAST_CONN, 2, w, NULL);
    int held[8], on[2] = {0};
    for (int i = 0; i < 8; i++) {
        uint64_t t = 0;
        held[i] = edge_balancer_pick(b, NULL, 0, &t, 0, NULL);
        on[held[i]]++;
    }
    check(on[0] == 6 && on[1] == 2, "least_conn weights 3,1 with 8 held: %d %d, want 6 2", on[0], on[1]);
    /* The heavy server at 6/3 = 2 per unit, the light one at 2/1 = 2: free
     * two on the light one and it is the least loaded relative to weight. */
    int freed = 0;
    for (int i = 0; i < 8 && freed < 1; i++)
        if (held[i] == 1) {
            edge_balancer_done(b, 1, EDGE_PEER_OK, 0);
            held[i] = -1;
            freed++;
        }
    uint64_t t = 0;
    int s = edge_balancer_pick(b, NULL, 0, &t, 0, NULL);
    check(s == 1, "least_conn weights 3,1: 6/3 vs 1/1 picked %d, want 1", s);
    edge_balancer_done(b, s, EDGE_PEER_OK, 0);
    /* Now 6/3 against 1/1: free four on the heavy one, 2/3 < 1/1, and it wins. */
    for (int i = 0, n = 0; i < 8 && n < 4; i++)
        if (held[i] == 0) {
            edge_balancer_done(b, 0, EDGE_PEER_OK, 0);
            held[i] = -1;
            n++;
        }
    t = 0;
    s = edge_balancer_pick(b, NULL, 0, &t, 0, NULL);
    check(s == 0, "least_conn weights 3,1: 2/3 vs 1/1 picked %d, want 0", s);
    edge_balancer_free(b);
}

/* ---- consistent hashing ---- */

enum { NKEYS = 10000 };

/* The host name ("s<i>.test") of the server each key goes to. */
static void map_keys(edge_balancer *b, const edge_upstream_def *def, int *out)
{
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "/user/%d", k);
        int s = pick_once(b, key, 0);
        out[k] = s < 0 ? -1 : atoi(def->servers[s].host + 1);
    }
}

static void test_hash(void)
{
    edge_upstream_def d4, d5, d4b;
    make_def(&d4, EDGE_BALANCE_HASH, 4, NULL, NULL);
    make_def(&d5, EDGE_BALANCE_HASH, 5, NULL, NULL);
    edge_balancer *b4 = edge_balancer_new(&d4), *b5 = edge_balancer_new(&d5);
    static int m4[NKEYS], m5[NKEYS], again[NKEYS], m4b[NKEYS];
    map_keys(b4, &d4, m4);
    map_keys(b4, &d4, again);
    check(memcmp(m4, again, sizeof(m4)) == 0, "hash: the same key went to another server on a second pass");
    int count[4] = {0};
    for (int k = 0; k < NKEYS; k++) count[m4[k]]++;
    for (int i = 0; i < 4; i++)
        check(count[i] > NKEYS / 8 && count[i] < NKEYS * 3 / 8, "hash: server %d got %d of %d keys", i,
              count[i], NKEYS);

    map_keys(b5, &d5, m5);
    int moved = 0, moved_elsewhere = 0;
    for (int k = 0; k < NKEYS; k++) {
        if (m5[k] == m4[k]) continue;
        moved++;
        if (m5[k] != 4) moved_elsewhere++;
    }
    check(moved >= NKEYS * 12 / 100 && moved <= NKEYS * 28 / 100,
          "hash: adding a 5th server to 4 moved %d of %d keys, want 12..28 %%", moved, NKEYS);
    check(moved_elsewhere == 0, "hash: adding a server moved %d keys to an old server", moved_elsewhere);

    /* Removing s2 from the five (the list shifts; the ring must not care). */
    make_def(&d4b, EDGE_BALANCE_HASH, 4, NULL, NULL);
    const int keep[] = {0, 1, 3, 4};
    for (int i = 0; i < 4; i++) {
        char host[32];
        snprintf(host, sizeof(host), "s%d.test", keep[i]);
        free(d4b.servers[i].host);
        d4b.servers[i].host = strdup(host);
        d4b.servers[i].port = (uint16_t)(8000 + keep[i]);
    }
    edge_balancer *b4b = edge_balancer_new(&d4b);
    map_keys(b4b, &d4b, m4b);
    int wrong = 0, of_removed = 0;
    for (int k = 0; k < NKEYS; k++) {
        if (m5[k] == 2) of_removed++;
        else if (m4b[k] != m5[k]) wrong++;
    }
    check(wrong == 0, "hash: removing s2 moved %d keys that were not on s2", wrong);
    check(of_removed > 0, "hash: s2 had no keys");

    /* A key whose server is tried goes to the next distinct server, then the next. */
    uint64_t tried = 0;
    int first = edge_balancer_pick(b5, "/user/7", 7, &tried, 0, NULL);
    int second = edge_balancer_pick(b5, "/user/7", 7, &tried, 0, NULL);
    check(first == m5[7], "hash: first pick %d, not the key's server %d", first, m5[7]);
    check(second >= 0 && second != first, "hash: the retry went to %d, the server just tried (%d)", second, first);
    edge_balancer_done(b5, first, EDGE_PEER_OK, 0);
    edge_balancer_done(b5, second, EDGE_PEER_OK, 0);
    /* The retry order is stable too: the same key's second choice is the same. */
    tried = 0;
    edge_balancer_pick(b5, "/user/7", 7, &tried, 0, NULL);
    int second_again = edge_balancer_pick(b5, "/user/7", 7, &tried, 0, NULL);
    check(second_again == second, "hash: second choice %d then %d", second, second_again);
    edge_balancer_done(b5, first, EDGE_PEER_OK, 0);
    edge_balancer_done(b5, second_again, EDGE_PEER_OK, 0);

    edge_balancer_free(b4);
    edge_balancer_free(b5);
    edge_balancer_free(b4b);
    edge_upstream_def_free(&d4);
    edge_upstream_def_free(&d5);
    edge_upstream_def_free(&d4b);
}

/* ---- the tried set ---- */

static void test_tried(edge_balance balance, const char *name)
{
    edge_balancer *b = new_balancer(balance, 5, NULL, NULL);
    for (int round = 0; round < 20; round++) {
        uint64_t tried = 0;
        int seen = 0, ok = 1;
        char key[16];
        snprintf(key, sizeof(key), "k%d", round);
        for (int i = 0; i < 5; i++) {
            uint64_t before = tried;
            int s = edge_balancer_pick(b, key, strlen(key), &tried, 0, NULL);
            if (s < 0 || (before >> s & 1) || !(tried >> s & 1)) ok = 0;
            else seen |= 1 << s;
        }
        check(ok && seen == 0x1f, "%s: 5 picks with one tried set: not 5 distinct servers", name);
        int s = edge_balancer_pick(b, key, strlen(key), &tried, 0, NULL);
        check(s == -1, "%s: a 6th pick with all 5 tried returned %d, want -1", name, s);
        for (int i = 0; i < 5; i++) edge_balancer_done(b, i, EDGE_PEER_OK, 0);
    }
    edge_balancer_free(b);
}

static void test_backup(void)
{
    edge_balancer *b = new_balancer(EDGE_BALANCE_ROUND_ROBIN, 3, NULL, "..b");
    int on_backup = 0;
    for (int i = 0; i < 100; i++) on_backup += pick_once(b, NULL, 0) == 2;
    check(on_backup == 0, "backup: %d of 100 picks went to the backup while the primaries were up", on_backup);
    uint64_t tried = 0;
    int a = edge_balancer_pick(b, NULL, 0, &tried, 0, NULL);
    int c = edge_balancer_pick(b, NULL, 0, &tried, 0, NULL);
    int all_down = -1;
    int d = edge_balancer_pick(b, NULL, 0, &tried, 0, &all_down);
    check(a != 2 && c != 2 && d == 2 && all_down == 0, "backup: picks %d %d %d (all_down %d), want the "
          "primaries then the backup", a, c, d, all_down);
    edge_balancer_done(b, a, EDGE_PEER_FAILED, 0);
    edge_balancer_done(b, c, EDGE_PEER_FAILED, 0);
    edge_balancer_done(b, d, EDGE_PEER_OK, 0);
    /* Both primaries now down (max_fails 1): the backup takes requests, and that is not "all down". */
    tried = 0;
    int s = edge_balancer_pick(b, NULL, 0, &tried, 1, &all_down);
    check(s == 2 && all_down == 0, "backup: with the primaries down picked %d (all_down %d), want 2, 0", s, all_down);
    edge_balancer_done(b, s, EDGE_PEER_OK, 1);
    edge_balancer_free(b);
}

/* ---- retries ---- */

static void test_retry_cap(void)
{
    edge_upstream_def def;
    edge_upstream_def_init(&def);
    def.retries.tries = 3;
    unsigned timeout = EDGE_UPSTREAM_FAIL_TIMEOUT, connect = EDGE_UPSTREAM_FAIL_CONNECT;
    check(edge_upstream_may_retry(&def, 1, timeout, 1), "retry: tries 3, after 1 try: want yes");
    check(edge_upstream_may_retry(&def, 2, timeout, 1), "retry: tries 3, after 2 tries: want yes");
    check(!edge_upstream_may_retry(&def, 3, timeout, 1), "retry: tries 3, after 3 tries: want no");
    check(!edge_upstream_may_retry(&def, UINT_MAX, timeout, 1), "retry: after UINT_MAX tries: want no");
    /* A bound no definition can lift, whatever the struct holds. */
    def.retries.tries = UINT_MAX;
    check(edge_upstream_may_retry(&def, EDGE_UPSTREAM_MAX_TRIES - 1, timeout, 1), "retry: tries below the cap");
    check(!edge_upstream_may_retry(&def, EDGE_UPSTREAM_MAX_TRIES, timeout, 1),
          "retry: %d tries passed the cap of %d", EDGE_UPSTREAM_MAX_TRIES, EDGE_UPSTREAM_MAX_TRIES);
    def.retries.tries = 0;
    check(!edge_upstream_may_retry(&def, 0, timeout, 1), "retry: tries 0 must never retry");
    def.retries.tries = 3;
    /* Only failures listed in on; the default on is connect, error, timeout. */
    check(!edge_upstream_may_retry(&def, 1, EDGE_UPSTREAM_FAIL_HTTP_502, 1), "retry: 502 is not in the default on");
    def.retries.on |= EDGE_UPSTREAM_FAIL_HTTP_502;
    check(edge_upstream_may_retry(&def, 1, EDGE_UPSTREAM_FAIL_HTTP_502, 1), "retry: 502 listed in on");
    /* A non-idempotent request: after a connect failure only, unless asked. */
    check(edge_upstream_may_retry(&def, 1, connect, 0), "retry: POST after a connect failure: want yes");
    check(!edge_upstream_may_retry(&def, 1, timeout, 0), "retry: POST after a timeout: want no");
    def.retries.on |= EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT;
    check(edge_upstream_may_retry(&def, 1, timeout, 0), "retry: POST with non_idempotent: want yes");
    check(!edge_upstream_may_retry(&def, 1, EDGE_UPSTREAM_RETRY_NON_IDEMPOTENT, 1),
          "retry: non_idempotent is not itself a failure");
    check(edge_upstream_counts_as_failure(&def, timeout) && !edge_upstream_counts_as_failure(&def,
          EDGE_UPSTREAM_FAIL_HTTP_503), "counts_as_failure: listed ones only");
    edge_upstream_def_free(&def);

    /* A request loop as a caller would write it never exceeds tries. */
    make_def(&def, EDGE_BALANCE_ROUND_ROBIN, 10, NULL, NULL);
    def.retries.tries = 4;
    edge_balancer *b = edge_balancer_new(&def);
    uint64_t tried = 0;
    unsigned tries = 0;
    for (;;) {
        int s = edge_balancer_pick(b, NULL, 0, &tried, 0, NULL);
        if (s < 0) break;
        tries++;
        edge_balancer_done(b, s, EDGE_PEER_FAILED, 0);
        if (!edge_upstream_may_retry(&def, tries, timeout, 1)) break;
    }
    check(tries == 4, "retry loop: %u tries with tries = 4 and 10 servers", tries);
    edge_balancer_free(b);
    edge_upstream_def_free(&def);
}

/* ---- passive health ---- */

static void test_passive(void)
{
    edge_upstream_def def;
    make_def(&def, EDGE_BALANCE_ROUND_ROBIN, 3, NULL, NULL);
    def.passive.max_fails = 2;
    def.passive.fail_timeout = 10;
    edge_balancer *b = edge_balancer_new(&def);

    /* Two failures of s0 within 10 s: out. */
    uint64_t t = 0;
    edge_balancer_pick(b, NULL, 0, &t, 0, NULL);     /* s0 first (all weights 1) */
    edge_balancer_done(b, 0, EDGE_PEER_FAILED, 0);
    check(edge_balancer_is_up(b, 0), "passive: one failure of 2 took s0 out");
    t = 0;
    edge_balancer_pick(b, NULL, 0, &t, 0, NULL);
    edge_balancer_pick(b, NULL, 0, &t, 0, NULL);
    edge_balancer_pick(b, NULL, 0, &t, 0, NULL);
    for (int i = 0; i < 3; i++) edge_balancer_done(b, i, i == 0 ? EDGE_PEER_FAILED : EDGE_PEER_OK, 5);
    check(!edge_balancer_is_up(b, 0), "passive: 2 failures in 5 s left s0 up");
    int on0 = 0;
    for (int i = 0; i < 50; i++) on0 += pick_once(b, NULL, 6 + i * 0.1) == 0;
    check(on0 == 0, "passive: s0 got %d picks while down", on0);

    /* After fail_timeout (down until 15): one trial, and only one at a time. */
    check(pick_until(b, 0, 15.5), "passive: s0 got no trial pick after fail_timeout");
    on0 = 0;
    for (int i = 0; i < 20; i++) on0 += pick_once(b, NULL, 16) == 0;
    check(on0 == 0, "passive: %d more picks of s0 while its trial was in flight", on0);
    check(!edge_balancer_is_up(b, 0), "passive: s0 counted up before its trial ended");
    edge_balancer_done(b, 0, EDGE_PEER_OK, 16);
    check(edge_balancer_is_up(b, 0), "passive: a successful trial did not restore s0");
    on0 = 0;
    for (int i = 0; i < 30; i++) on0 += pick_once(b, NULL, 17) == 0;
    check(on0 >= 5, "passive: restored s0 got only %d of 30 picks", on0);

    /* Failures further apart than fail_timeout never add up to max_fails. */
    for (int i = 0; i < 5; i++) {
        double now = 100 + i * 11.0;
        check(pick_until(b, 1, now), "passive: s1 not picked at %.0f", now);
        edge_balancer_done(b, 1, EDGE_PEER_FAILED, now);
    }
    check(edge_balancer_is_up(b, 1), "passive: failures 11 s apart took s1 out (fail_timeout 10)");

    /* A failed trial keeps the server out for another fail_timeout. */
    for (int i = 0; i < 2; i++) {
        check(pick_until(b, 2, 200), "passive: s2 not picked at 200");
        edge_balancer_done(b, 2, EDGE_PEER_FAILED, 200);
    }
    check(!edge_balancer_is_up(b, 2), "passive: 2 failures at once left s2 up");
    check(pick_until(b, 2, 211), "passive: s2 got no trial at 211");
    edge_balancer_done(b, 2, EDGE_PEER_FAILED, 211);
    int on2 = 0;
    for (int i = 0; i < 30; i++) on2 += pick_once(b, NULL, 215 + i * 0.2) == 2;
    check(on2 == 0, "passive: s2 got %d picks within fail_timeout of a failed trial", on2);
    check(pick_until(b, 2, 222), "passive: s2 got no second trial at 222");
    edge_balancer_done(b, 2, EDGE_PEER_OK, 222);
    check(edge_balancer_is_up(b, 2), "passive: the second trial's success did not restore s2");
    edge_balancer_free(b);
    edge_upstream_def_free(&def);

    /* max_fails 0: passive health off, no failure count takes a server out. */
    make_def(&def, EDGE_BALANCE_ROUND_ROBIN, 2, NULL, NULL);
    def.passive.max_fails = 0;
    b = edge_balancer_new(&def);
    for (int i = 0; i < 10; i++) {
        uint64_t ti = 0;
        edge_balancer_pick(b, NULL, 0, &ti, i, NULL);
        edge_balancer_pick(b, NULL, 0, &ti, i, NULL);
        edge_balancer_done(b, 0, EDGE_PEER_FAILED, i);
        edge_balancer_done(b, 1, EDGE_PEER_FAILED, i);
    }
    check(edge_balancer_is_up(b, 0) && edge_balancer_is_up(b, 1), "passive: max_fails 0 took a server out");
    edge_balancer_free(b);
    edge_upstream_def_free(&def);
}

/* Every server down: each is tried once (nginx), all_down says so, then -1. */
static void test_all_down(edge_balance balance, const char *name)
{
    edge_upstream_def def;
    make_def(&def, balance, 3, NULL, NULL);
    def.passive.max_fails = 1;
    edge_balancer *b = edge_balancer_new(&def);
    uint64_t t = 0;
    for (int i = 0; i < 3; i++) edge_balancer_pick(b, "k", 1, &t, 0, NULL);
    for (int i = 0; i < 3; i++) edge_balancer_done(b, i, EDGE_PEER_FAILED, 0);
    for (int i = 0; i < 3; i++) check(!edge_balancer_is_up(b, i), "%s all down: s%d still up", name, i);

    t = 0;
    int seen = 0, flags = 0;
    for (int i = 0; i < 3; i++) {
        int all_down = 0;
        int s = edge_balancer_pick(b, "k", 1, &t, 1, &all_down);
        flags += all_down;
        if (s >= 0) seen |= 1 << s;
    }
    int all_down = -1;
    int s = edge_balancer_pick(b, "k", 1, &t, 1, &all_down);
    check(seen == 7 && flags == 3, "%s all down: tried set %#x, all_down %d times; want each once, flagged",
          name, seen, flags);
    check(s == -1 && all_down == 0, "%s all down: 4th pick %d (all_down %d), want -1", name, s, all_down);
    /* One of them answers: it is back, and the next pick is not "all down". */
    edge_balancer_done(b, 1, EDGE_PEER_OK, 1);
    edge_balancer_done(b, 0, EDGE_PEER_FAILED, 1);
    edge_balancer_done(b, 2, EDGE_PEER_FAILED, 1);
    check(edge_balancer_is_up(b, 1), "%s all down: the one that answered is still down", name);
    t = 0;
    s = edge_balancer_pick(b, "k", 1, &t, 2, &all_down);
    check(s == 1 && all_down == 0, "%s all down: after recovery picked %d (all_down %d), want 1, 0",
          name, s, all_down);
    edge_balancer_done(b, s, EDGE_PEER_OK, 2);
    edge_balancer_free(b);
    edge_upstream_def_free(&def);
}

/* Active health: a server its checks put down is never picked while another
 * is up, whatever its passive state; with every server down by checks, the
 * try-them-all rule still applies; set up again, it gets picks again. */
static void test_checked(edge_balance balance, const char *name)
{
    edge_balancer *b = new_balancer(balance, 3, NULL, NULL);
    edge_balancer_set_checked(b, 1, 0);
    check(!edge_balancer_is_up(b, 1) && !edge_balancer_is_checked_up(b, 1),
          "%s checked: s1 still up after its checks failed", name);
    check(edge_balancer_is_checked_up(b, 0), "%s checked: s0 counted down by checks", name);
    int on1 = 0;
    for (int i = 0; i < 60; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        on1 += pick_once(b, key, i) == 1;
    }
    check(on1 == 0, "%s checked: s1 got %d of 60 picks while its checks failed", name, on1);
    /* passive success does not override the checks */
    uint64_t t = (uint64_t)1 << 0 | (uint64_t)1 << 2;   /* s0 and s2 tried: only s1 is left */
    int all_down = 0;
    int s = edge_balancer_pick(b, "k", 1, &t, 100, &all_down);
    check(s == 1 && all_down == 1, "%s checked: last untried s1 picked %d (all_down %d), want 1, 1", name, s,
          all_down);
    edge_balancer_done(b, s, EDGE_PEER_OK, 100);
    check(!edge_balancer_is_checked_up(b, 1), "%s checked: a request's success undid the checks", name);
    for (int i = 0; i < 3; i++) edge_balancer_set_checked(b, i, 0);
    t = 0;
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        s = edge_balancer_pick(b, "k", 1, &t, 101, &all_down);
        if (s >= 0) seen |= 1 << s;
    }
    check(seen == 7 && all_down == 1, "%s checked: all down tried %#x (all_down %d), want each once", name, seen,
          all_down);
    for (int i = 0; i < 3; i++) edge_balancer_done(b, i, EDGE_PEER_ABORTED, 101);
    for (int i = 0; i < 3; i++) edge_balancer_set_checked(b, i, 1);
    on1 = 0;
    for (int i = 0; i < 60; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        on1 += pick_once(b, key, 200 + i) == 1;
    }
    check(on1 > 0 && edge_balancer_is_up(b, 1), "%s checked: s1 back up got %d of 60 picks", name, on1);
    edge_balancer_free(b);
}

/* Option names and bits map both ways; unknown names map to nothing. */
static void test_names(void)
{
    int named = 0;
    for (unsigned k = 0; k < 32; k++) {
        const char *n = edge_upstream_failure_name(1u << k);
        if (n == NULL) continue;
        named++;
        check(edge_upstream_failure_parse(n) == 1u << k, "names: '%s' parses to %#x, want %#x", n,
              edge_upstream_failure_parse(n), 1u << k);
    }
    check(named == 10, "names: %d named failure bits, want 10", named);
    check(edge_upstream_failure_parse("501") == 0 && edge_upstream_failure_parse("") == 0, "names: unknown failure parsed");
    edge_balance bal = EDGE_BALANCE_ROUND_ROBIN;
    check(edge_upstream_balance_parse("hash", &bal) == 0 && bal == EDGE_BALANCE_HASH, "names: 'hash'");
    check(edge_upstream_balance_parse("least_conn", &bal) == 0 && bal == EDGE_BALANCE_LEAST_CONN, "names: 'least_conn'");
    check(edge_upstream_balance_parse("random", &bal) != 0 && bal == EDGE_BALANCE_LEAST_CONN, "names: 'random' accepted");
    check(strcmp(edge_upstream_balance_name(EDGE_BALANCE_ROUND_ROBIN), "round_robin") == 0, "names: round_robin");
}

static void test_bad_defs(void)
{
    edge_upstream_def def;
    make_def(&def, EDGE_BALANCE_ROUND_ROBIN, 1, NULL, NULL);
    def.servers[0].weight = 0;
    check(edge_balancer_new(&def) == NULL, "new: weight 0 accepted");
    def.servers[0].weight = EDGE_UPSTREAM_MAX_WEIGHT + 1;
    check(edge_balancer_new(&def) == NULL, "new: weight over the maximum accepted");
    def.n_servers = 0;
    check(edge_balancer_new(&def) == NULL, "new: no server accepted");
    def.n_servers = 1;
    edge_upstream_def_free(&def);
    make_def(&def, EDGE_BALANCE_HASH, EDGE_UPSTREAM_MAX_SERVERS, NULL, NULL);
    for (size_t i = 0; i < def.n_servers; i++) def.servers[i].weight = EDGE_UPSTREAM_MAX_WEIGHT;
    edge_balancer *b = edge_balancer_new(&def);
    check(b != NULL, "new: the largest ring (64 servers of weight 100) refused");
    if (b) {
        uint64_t t = 0;
        int n = 0;
        while (edge_balancer_pick(b, "key", 3, &t, 0, NULL) >= 0) n++;
        check(n == EDGE_UPSTREAM_MAX_SERVERS && t == UINT64_MAX, "largest ring: %d distinct picks, want 64", n);
        for (int i = 0; i < EDGE_UPSTREAM_MAX_SERVERS; i++) edge_balancer_done(b, i, EDGE_PEER_ABORTED, 0);
        edge_balancer_free(b);
    }
    edge_upstream_def_free(&def);
}

int main(void)
{
    test_swrr();
    test_least_conn();
    test_hash();
    test_tried(EDGE_BALANCE_ROUND_ROBIN, "round_robin");
    test_tried(EDGE_BALANCE_LEAST_CONN, "least_conn");
    test_tried(EDGE_BALANCE_HASH, "hash");
    test_backup();
    test_retry_cap();
    test_passive();
    test_all_down(EDGE_BALANCE_ROUND_ROBIN, "round_robin");
    test_all_down(EDGE_BALANCE_LEAST_CONN, "least_conn");
    test_all_down(EDGE_BALANCE_HASH, "hash");
    test_checked(EDGE_BALANCE_ROUND_ROBIN, "round_robin");
    test_checked(EDGE_BALANCE_LEAST_CONN, "least_conn");
    test_checked(EDGE_BALANCE_HASH, "hash");
    test_bad_defs();
    test_names();
    if (failures) {
        printf("balancer_test: %d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("balancer_test: ok: %d checks\n", checks);
    return 0;
}
