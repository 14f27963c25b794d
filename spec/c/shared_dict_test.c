/* The shared dictionaries' C (src/shared_dict.c) under threads: 8 threads
 * for a few seconds on one small dict, doing set/get/incr/update/delete/
 * expire/flush_expired/get_keys with keys many times the dict's room, so
 * writes evict all the time. Checks: every incr of a dedicated counter and
 * every edge_shdict_update of another is counted exactly (they live in a dict
 * large enough that they are never evicted); a string read back always has
 * the length and bytes its key implies (no torn value); the byte count never
 * passes the capacity; and the registry hands every thread the same dict.
 *
 * Built by `make shared-dict-test` under ThreadSanitizer and under ASan +
 * UBSan (build/test/shared_dict_test_tsan, _asan); run by
 * spec/shared_dict_unit_spec.lua. Prints "FAIL ..." lines and exits 1, or
 * "shared_dict_test: ok ..." and exits 0. */
#include "shared_dict.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define THREADS 8
#define KEYS    512

static edge_shdict *churn, *counters;
static atomic_int stop;
static atomic_long incrs, updates, failures;

static void fail(const char *what, const char *key)
{
    atomic_fetch_add(&failures, 1);
    printf("FAIL: %s (%s)\n", what, key);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The value of key i: its length and bytes follow from i, so a torn or
 * mixed-up value shows. */
static size_t value_of(int i, char *buf)
{
    size_t len = 10 + (size_t)(i * 37) % 300;
    memset(buf, 'a' + i % 26, len);
    return len;
}

static void check_read(int i, const char *key, size_t klen, double now)
{
    char buf[512], want[512];
    edge_shdict_value v;
    size_t needed;
    int expired;
    if (!edge_shdict_get(churn, key, klen, now, i % 2, &v, buf, sizeof(buf), &needed, &expired)) return;
    if (v.type != EDGE_SHDICT_STRING) return;     /* an incr'd key of the same name */
    size_t len = value_of(i, want);
    if (needed != len || v.len != len || memcmp(buf, want, len) != 0) fail("torn or wrong value", key);
}

static int add_one(void *ud, int has, double cur, double *next, double *ttl)
{
    *next = (has ? cur : 0) + 1;
    *ttl = 0;
    return 1;
}

static void collect(void *ud, const char *key, size_t klen)
{
    if (klen == 0 || key[0] != 'k') fail("get_keys gave a bad key", "?");
}

static void one_round(unsigned *seed, double now)
{
    char key[32], val[512];
    int i = (int)(rand_r(seed) % KEYS);
    size_t klen = (size_t)snprintf(key, sizeof(key), "k%d", i);
    edge_shdict_value v = {.type = EDGE_SHDICT_STRING, .str = val};
    double r;
    switch (rand_r(seed) % 10) {
    case 0: case 1: case 2:
        v.len = value_of(i, val);
        edge_shdict_set(churn, key, klen, &v, (i % 3) * 0.001, (unsigned)(i % 2) * EDGE_SHDICT_SET_SAFE, now, NULL);
        break;
    case 3: case 4: check_read(i, key, klen, now); break;
    case 5:
        if (edge_shdict_incr(counters, "n", 1, 1, 1, 0, 0, now, &r, NULL) == EDGE_SHDICT_OK) atomic_fetch_add(&incrs, 1);
        else fail("incr", "n");
        break;
    case 6:
        if (edge_shdict_update(counters, "u", 1, now, add_one, NULL) == 1) atomic_fetch_add(&updates, 1);
        else fail("update", "u");
        break;
    case 7: edge_shdict_delete(churn, key, klen); break;
    case 8: edge_shdict_expire(churn, key, klen, 0.002, now); break;
    case 9:
        if (i % 8 == 0) edge_shdict_flush_expired(churn, now, 4);
        else if (i % 8 == 1) edge_shdict_keys(churn, now, 16, collect, NULL);
        else edge_shdict_incr(churn, "k0", 2, 1, 1, 0, 0, now, &r, NULL);
        break;
    }
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    char err[256];
    if (edge_shdict_define("churn", 16384, err, sizeof(err)) != churn) fail("define gave another dict", "churn");
    while (!atomic_load(&stop)) {
        for (int n = 0; n < 64; n++) one_round(&seed, mono());
        edge_shdict_stats st;
        edge_shdict_get_stats(churn, &st);
        if (st.bytes > st.capacity) fail("bytes past capacity", "churn");
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2;
    char err[256];
    churn = edge_shdict_define("churn", 16384, err, sizeof(err));
    counters = edge_shdict_define("counters", 4096, err, sizeof(err));
    if (!churn || !counters) {
        printf("FAIL: define: %s\n", err);
        return 1;
    }
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    double end = mono() + seconds;
    while (mono() < end) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);

    edge_shdict_value v;
    char buf[8];
    size_t needed;
    double now = mono();
    if (!edge_shdict_get(counters, "n", 1, now, 0, &v, buf, sizeof(buf), &needed, NULL) || v.number != (double)incrs)
        printf("FAIL: incr count %.0f, want %ld\n", v.number, (long)incrs), failures++;
    if (!edge_shdict_get(counters, "u", 1, now, 0, &v, buf, sizeof(buf), &needed, NULL) || v.number != (double)updates)
        printf("FAIL: update count %.0f, want %ld\n", v.number, (long)updates), failures++;
    edge_shdict_stats st;
    edge_shdict_get_stats(churn, &st);
    printf("shared_dict_test: %s: %ld incrs, %ld updates, %llu evictions, %llu keys left\n",
           failures ? "FAILED" : "ok", (long)incrs, (long)updates, (unsigned long long)st.evictions,
           (unsigned long long)st.keys);
    edge_shdict_free_all();
    return failures ? 1 : 0;
}
