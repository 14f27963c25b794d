/* The sharded, byte-bounded LRU response cache, and miss coalescing. Tags
 * live in cache_tags.c, purges in cache_purge.c (cache_internal.h). */
#include "cache.h"
#include "cache_internal.h"
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MIN_BUCKETS  64

/* A miss being computed: its key and the requests waiting for it. */
struct cache_flight {
    cache_flight *next;
    uint64_t hash;
    size_t   klen;
    edge_cache_waiter *waiters;
    char     key[];
};

/* FNV-1a, then MurmurHash3's 64-bit finaliser: FNV alone leaves its top
 * bits (which pick the shard) nearly equal for keys differing only at the
 * end, such as /users/1 .. /users/512. */
uint64_t cache_hash(const char *key, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb93fe53a87cdULL;
    h ^= h >> 33;
    return h;
}

cache_shard *cache_shard_of(edge_cache *c, uint64_t hash)
{
    return &c->shards[hash >> 60 & (CACHE_SHARDS - 1)];
}

edge_cache *edge_cache_new(size_t max_bytes)
{
    edge_cache *c = edge_calloc(1, sizeof(*c));
    c->max_bytes = max_bytes;
    c->max_object = max_bytes / CACHE_SHARDS;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &c->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->n_buckets = MIN_BUCKETS;
        s->buckets = edge_calloc(s->n_buckets, sizeof(*s->buckets));
        s->max_bytes = max_bytes / CACHE_SHARDS;
        s->lru.lru_next = s->lru.lru_prev = &s->lru;
    }
    return c;
}

void edge_cache_set_max_object(edge_cache *c, size_t max_object)
{
    size_t share = c->max_bytes / CACHE_SHARDS;
    c->max_object = max_object < share ? max_object : share;
}

size_t edge_cache_max_object(const edge_cache *c)
{
    return c->max_object;
}

/* ---- entries ---- */

void edge_cache_release(edge_cache_entry *e)
{
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) free(e);
}

void cache_lru_unlink(edge_cache_entry *e)
{
    e->lru_prev->lru_next = e->lru_next;
    e->lru_next->lru_prev = e->lru_prev;
}

static void lru_push_front(cache_shard *s, edge_cache_entry *e)
{
    e->lru_next = s->lru.lru_next;
    e->lru_prev = &s->lru;
    s->lru.lru_next->lru_prev = e;
    s->lru.lru_next = e;
}

edge_cache_entry **cache_slot(cache_shard *s, uint64_t hash, const char *key, size_t klen)
{
    edge_cache_entry **p = &s->buckets[(hash >> 4) & (s->n_buckets - 1)];
    for (; *p; p = &(*p)->hnext) {
        edge_cache_entry *e = *p;
        if (e->hash == hash && e->key_len == klen && memcmp(e->data, key, klen) == 0) return p;
    }
    return p;
}

void cache_remove_at(cache_shard *s, edge_cache_entry **slot, edge_cache_entry **grave)
{
    edge_cache_entry *e = *slot;
    *slot = e->hnext;
    cache_lru_unlink(e);
    cache_tags_unlink(s, e);
    s->count--;
    s->bytes -= e->size;
    e->hnext = *grave;
    *grave = e;
}

static void remove_entry(cache_shard *s, edge_cache_entry *e, edge_cache_entry **grave)
{
    cache_remove_at(s, cache_slot(s, e->hash, e->data, e->key_len), grave);
}

/* Freeing outside the lock: a purge of many entries frees them after each
 * batch, not while workers wait for the shard. */
void cache_bury(edge_cache_entry *grave)
{
    while (grave) {
        edge_cache_entry *next = grave->hnext;
        edge_cache_release(grave);
        grave = next;
    }
}

static void grow_table(cache_shard *s)
{
    size_t n = s->n_buckets * 2;
    edge_cache_entry **b = edge_calloc(n, sizeof(*b));
    for (size_t i = 0; i < s->n_buckets; i++) {
        edge_cache_entry *e = s->buckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            edge_cache_entry **slot = &b[(e->hash >> 4) & (n - 1)];
            e->hnext = *slot;
            *slot = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->n_buckets = n;
}

/* Counts a look-up: a hit is a fresh entry, or one in grace when the
 * caller takes stale ones; markers count neither (the look-up they lead to
 * does); anything else (nothing, stale in keep) is a miss. */
static void count_lookup(cache_shard *s, const edge_cache_entry *e, int state, unsigned flags)
{
    if (!(flags & EDGE_CACHE_COUNT)) return;
    if (e == NULL) s->misses++;
    else if (edge_cache_entry_is_marker(e)) return;
    else if (state == EDGE_CACHE_FRESH || state == EDGE_CACHE_GRACE) s->hits++;
    else s->misses++;
}

edge_cache_entry *edge_cache_lookup(edge_cache *c, const char *key, size_t klen, double now,
                                    unsigned flags)
{
    uint64_t hash = cache_hash(key, klen);
    cache_shard *s = cache_shard_of(c, hash);
    edge_cache_entry *grave = NULL;
    pthread_mutex_lock(&s->lock);
    edge_cache_entry **slot = cache_slot(s, hash, key, klen);
    edge_cache_entry *e = *slot;
    int state = e ? edge_cache_entry_state(e, now) : EDGE_CACHE_GONE;
    if (e && state == EDGE_CACHE_GONE) {
        cache_remove_at(s, slot, &grave);
        e = NULL;
    } else if (e && state != EDGE_CACHE_FRESH && !(flags & EDGE_CACHE_STALE)) {
        e = NULL;                 /* held for stale use, but this caller takes fresh only */
    }
    if (e) {
        cache_lru_unlink(e);
        lru_push_front(s, e);
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    }
    count_lookup(s, e, state, flags);
    pthread_mutex_unlock(&s->lock);
    cache_bury(grave);
    return e;
}

edge_cache_entry *edge_cache_get(edge_cache *c, const char *key, size_t klen, double now)
{
    return edge_cache_lookup(c, key, klen, now, EDGE_CACHE_COUNT);
}

edge_cache_entry *edge_cache_peek(edge_cache *c, const char *key, size_t klen, double now)
{
    return edge_cache_lookup(c, key, klen, now, 0);
}

/* Drops the entries of up to n buckets of s that are past all their
 * lifetimes, from where the last sweep stopped. Returns the entries dropped. */
static size_t sweep_shard(cache_shard *s, double now, size_t n)
{
    size_t dropped = 0;
    edge_cache_entry *grave = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n && i < s->n_buckets; i++) {
        size_t b = s->sweep_at++ & (s->n_buckets - 1);
        edge_cache_entry **slot = &s->buckets[b];
        while (*slot) {
            if (edge_cache_entry_state(*slot, now) == EDGE_CACHE_GONE) {
                cache_remove_at(s, slot, &grave);
                dropped++;
            } else {
                slot = &(*slot)->hnext;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    cache_bury(grave);
    return dropped;
}

size_t edge_cache_sweep(edge_cache *c, double now, size_t buckets_per_shard)
{
    size_t dropped = 0;
    for (int i = 0; i < CACHE_SHARDS; i++) dropped += sweep_shard(&c->shards[i], now, buckets_per_shard);
    return dropped;
}

/* ---- storing ---- */

/* The bytes of an entry's one allocation up to its tag links: key (padded
 * so the header spans are aligned), spans, header bytes, body. */
static size_t layout_size(size_t klen, const edge_response *resp)
{
    size_t key_space = (klen + 7) & ~(size_t)7;
    return sizeof(edge_cache_entry) + key_space + (size_t)resp->n_headers * sizeof(edge_header) +
           resp->data.len + resp->body.len;
}

/* The links follow the body, aligned; cache_tags_charge counts the padding
 * as 7 bytes whatever the body's length, so sizes add up. */
static struct edge_cache_tag_link *links_of(edge_cache_entry *e)
{
    uintptr_t end = (uintptr_t)(edge_cache_entry_body(e) + e->body_len);
    return (struct edge_cache_tag_link *)((end + 7) & ~(uintptr_t)7);
}

size_t cache_entry_alloc_size(const edge_cache_entry *e)
{
    const char *end = e->n_tags ? (const char *)(e->tags + e->n_tags) : edge_cache_entry_body(e) + e->body_len;
    return (size_t)(end - (const char *)e);
}

/* Counts what the entry would hold, tags included, for a key without a
 * '\0' (a derived key adds the link to its base key; the put counts it). */
size_t edge_cache_object_size(size_t klen, const edge_response *resp)
{
    cache_tag_set ts;
    cache_tags_read("", 0, resp, &ts);
    return layout_size(klen, resp) + cache_tags_charge(&ts);
}

/* A lifetime in [0, EDGE_CACHE_LIFE_MAX]: NaN is 0, math.huge or an
 * origin's max-age=1e30 the longest. */
static double bounded(double v)
{
    if (!(v > 0)) return 0;
    return v < EDGE_CACHE_LIFE_MAX ? v : EDGE_CACHE_LIFE_MAX;
}

/* Lays a response out in one allocation: key, header spans, header bytes,
 * body, then the tag links (linked into the index under the lock). */
static edge_cache_entry *make_entry(const char *key, size_t klen, const edge_response *resp, uint64_t hash,
                                    double now, const edge_cache_life *life, const cache_tag_set *ts)
{
    size_t spans = (size_t)resp->n_headers * sizeof(edge_header);
    size_t layout = layout_size(klen, resp);
    size_t links = ts->n ? 7 + ts->n * sizeof(struct edge_cache_tag_link) : 0;
    edge_cache_entry *e = edge_malloc(layout + links);
    memset(e, 0, sizeof(*e));
    atomic_init(&e->refs, 1);
    e->status = resp->status;
    e->flags = resp->no_compress ? EDGE_CACHE_ENTRY_NO_COMPRESS : 0;
    e->hash = hash;
    e->stored_at = now;
    e->expires_at = now + bounded(life->ttl);
    e->grace = bounded(life->grace);
    e->keep = bounded(life->keep);
    e->size = layout + cache_tags_charge(ts);
    e->key_len = (uint32_t)klen;
    e->n_headers = (uint32_t)resp->n_headers;
    e->header_bytes = (uint32_t)resp->data.len;
    e->body_len = resp->body.len;
    memcpy(e->data, key, klen);
    if (spans) memcpy((char *)edge_cache_entry_headers(e), resp->headers, spans);
    if (resp->data.len) memcpy((char *)edge_cache_entry_header_data(e), resp->data.base, resp->data.len);
    if (resp->body.len) memcpy((char *)edge_cache_entry_body(e), resp->body.base, resp->body.len);
    if (ts->n) {
        e->tags = links_of(e);
        e->n_tags = ts->n;
        for (uint32_t i = 0; i < ts->n; i++) e->tags[i] = (struct edge_cache_tag_link){.entry = e};
    }
    return e;
}

/* Puts e in s, replacing its key's entry and evicting from the LRU's cold
 * end until it fits. */
static void insert(cache_shard *s, edge_cache_entry *e, const cache_tag_set *ts, edge_cache_entry **grave)
{
    const char *key = e->data;
    edge_cache_entry **slot = cache_slot(s, e->hash, key, e->key_len);
    if (*slot) cache_remove_at(s, slot, grave);
    while (s->bytes + e->size > s->max_bytes && s->lru.lru_prev != &s->lru) {
        remove_entry(s, s->lru.lru_prev, grave);
        s->evictions++;
    }
    if (s->count >= s->n_buckets) grow_table(s);
    slot = cache_slot(s, e->hash, key, e->key_len);
    *slot = e;
    lru_push_front(s, e);
    s->count++;
    s->bytes += e->size;
    cache_tags_link(s, e, ts);
}

int edge_cache_put_life(edge_cache *c, const char *key, size_t klen, const edge_response *resp,
                        double now, const edge_cache_life *life)
{
    if (!(life->ttl > 0)) return EDGE_ERROR;
    cache_tag_set ts;
    cache_tags_read(key, klen, resp, &ts);
    if (layout_size(klen, resp) + cache_tags_charge(&ts) > c->max_object) return EDGE_ERROR;
    uint64_t hash = cache_hash(key, klen);
    cache_shard *s = cache_shard_of(c, hash);
    edge_cache_entry *e = make_entry(key, klen, resp, hash, now, life, &ts);   /* outside the lock */
    edge_cache_entry *grave = NULL;
    pthread_mutex_lock(&s->lock);
    insert(s, e, &ts, &grave);
    pthread_mutex_unlock(&s->lock);
    cache_bury(grave);
    return EDGE_OK;
}

int edge_cache_put(edge_cache *c, const char *key, size_t klen, const edge_response *resp,
                   double now, double ttl)
{
    edge_cache_life life = {.ttl = ttl, .grace = 0, .keep = 0};
    return edge_cache_put_life(c, key, klen, resp, now, &life);
}

void edge_cache_get_stats(edge_cache *c, edge_cache_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->max_bytes = c->max_bytes;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        st->entries += s->count;
        st->bytes += s->bytes;
        st->hits += s->hits;
        st->misses += s->misses;
        st->evictions += s->evictions;
        st->purged += s->purged;
        pthread_mutex_unlock(&s->lock);
    }
}

void edge_cache_entry_to_response(const edge_cache_entry *e, edge_response *resp)
{
    const edge_header *h = edge_cache_entry_headers(e);
    const char *data = edge_cache_entry_header_data(e);
    resp->status = e->status;
    resp->no_compress = (e->flags & EDGE_CACHE_ENTRY_NO_COMPRESS) != 0;
    for (uint32_t i = 0; i < e->n_headers; i++)
        edge_response_add_header(resp, data + h[i].name.off, h[i].name.len, data + h[i].value.off,
                                 h[i].value.len);
    edge_buf_append(&resp->body, edge_cache_entry_body(e), e->body_len);
}

/* ---- coalescing ---- */

static cache_flight **find_flight(cache_shard *s, uint64_t hash, const char *key, size_t klen)
{
    cache_flight **p = &s->flights[(hash >> 8) & (CACHE_FLIGHT_BUCKETS - 1)];
    for (; *p; p = &(*p)->next)
        if ((*p)->hash == hash && (*p)->klen == klen && memcmp((*p)->key, key, klen) == 0) return p;
    return p;
}

static void start_flight(cache_flight **p, uint64_t hash, const char *key, size_t klen)
{
    cache_flight *f = edge_calloc(1, sizeof(*f) + klen);
    f->hash = hash;
    f->klen = klen;
    memcpy(f->key, key, klen);
    *p = f;
}

/* Leads key's flight when none runs; otherwise w (when given) joins it. */
static int lead_or_join(edge_cache *c, const char *key, size_t klen, edge_cache_waiter *w)
{
    uint64_t hash = cache_hash(key, klen);
    cache_shard *s = cache_shard_of(c, hash);
    pthread_mutex_lock(&s->lock);
    cache_flight **p = find_flight(s, hash, key, klen);
    int rc = EDGE_AGAIN;
    if (*p == NULL) {
        start_flight(p, hash, key, klen);
        rc = EDGE_OK;
    } else if (w) {
        w->next = (*p)->waiters;
        (*p)->waiters = w;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int edge_cache_flight_join(edge_cache *c, const char *key, size_t klen, edge_cache_waiter *w)
{
    return lead_or_join(c, key, klen, w);
}

int edge_cache_flight_try_lead(edge_cache *c, const char *key, size_t klen)
{
    return lead_or_join(c, key, klen, NULL);
}

void edge_cache_flight_done(edge_cache *c, const char *key, size_t klen)
{
    uint64_t hash = cache_hash(key, klen);
    cache_shard *s = cache_shard_of(c, hash);
    pthread_mutex_lock(&s->lock);
    cache_flight **p = find_flight(s, hash, key, klen);
    cache_flight *f = *p;
    if (f) *p = f->next;
    pthread_mutex_unlock(&s->lock);
    if (f == NULL) return;
    edge_cache_waiter *w = f->waiters, *next;
    free(f);
    for (; w; w = next) {
        next = w->next;       /* wake may relink w elsewhere */
        w->wake(w);
    }
}

int edge_cache_flight_leave(edge_cache *c, const char *key, size_t klen, edge_cache_waiter *w)
{
    uint64_t hash = cache_hash(key, klen);
    cache_shard *s = cache_shard_of(c, hash);
    int found = 0;
    pthread_mutex_lock(&s->lock);
    cache_flight **p = find_flight(s, hash, key, klen);
    if (*p) {
        for (edge_cache_waiter **q = &(*p)->waiters; *q; q = &(*q)->next) {
            if (*q == w) {
                *q = w->next;
                found = 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

void edge_cache_free(edge_cache *c)
{
    for (int i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &c->shards[i];
        edge_cache_entry *grave = NULL;
        while (s->lru.lru_next != &s->lru) remove_entry(s, s->lru.lru_next, &grave);
        cache_bury(grave);
        cache_tags_free(s);
        for (int b = 0; b < CACHE_FLIGHT_BUCKETS; b++) {
            while (s->flights[b]) {
                cache_flight *f = s->flights[b];
                s->flights[b] = f->next;
                free(f);
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(c);
}
