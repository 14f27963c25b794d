/* The sharded, byte-bounded LRU response cache, and miss coalescing. */
#include "cache.h"
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS       16          /* a power of two */
#define MIN_BUCKETS  64
#define FLIGHT_BUCKETS 256        /* per shard */

/* A miss being computed: its key and the requests waiting for it. */
typedef struct flight {
    struct flight *next;
    uint64_t hash;
    size_t   klen;
    edge_cache_waiter *waiters;
    char     key[];
} flight;

typedef struct shard {
    pthread_mutex_t lock;
    edge_cache_entry **buckets;
    size_t   n_buckets;          /* a power of two */
    size_t   count;
    size_t   bytes;
    size_t   max_bytes;
    edge_cache_entry lru;        /* sentinel: lru.lru_next is the most recently used */
    flight  *flights[FLIGHT_BUCKETS];   /* misses in progress, hashed: 25,000 may run at once */
    size_t   sweep_at;           /* the bucket the next sweep starts from */
    uint64_t hits, misses, evictions;
} shard;

struct edge_cache {
    size_t max_bytes;
    size_t max_object;           /* the largest entry taken; at most a shard's share */
    shard  shards[SHARDS];
};

/* FNV-1a, then MurmurHash3's 64-bit finaliser: FNV alone leaves its top
 * bits (which pick the shard) nearly equal for keys differing only at the
 * end, such as /users/1 .. /users/512. */
static uint64_t hash_key(const char *key, size_t n)
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

static shard *shard_of(edge_cache *c, uint64_t hash)
{
    return &c->shards[hash >> 60 & (SHARDS - 1)];
}

edge_cache *edge_cache_new(size_t max_bytes)
{
    edge_cache *c = edge_calloc(1, sizeof(*c));
    c->max_bytes = max_bytes;
    c->max_object = max_bytes / SHARDS;
    for (int i = 0; i < SHARDS; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->n_buckets = MIN_BUCKETS;
        s->buckets = edge_calloc(s->n_buckets, sizeof(*s->buckets));
        s->max_bytes = max_bytes / SHARDS;
        s->lru.lru_next = s->lru.lru_prev = &s->lru;
    }
    return c;
}

void edge_cache_set_max_object(edge_cache *c, size_t max_object)
{
    c->max_object = max_object < c->max_bytes / SHARDS ? max_object : c->max_bytes / SHARDS;
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

static void lru_unlink(edge_cache_entry *e)
{
    e->lru_prev->lru_next = e->lru_next;
    e->lru_next->lru_prev = e->lru_prev;
}

static void lru_push_front(shard *s, edge_cache_entry *e)
{
    e->lru_next = s->lru.lru_next;
    e->lru_prev = &s->lru;
    s->lru.lru_next->lru_prev = e;
    s->lru.lru_next = e;
}

static edge_cache_entry **find_slot(shard *s, uint64_t hash, const char *key, size_t klen)
{
    edge_cache_entry **p = &s->buckets[(hash >> 4) & (s->n_buckets - 1)];
    for (; *p; p = &(*p)->hnext) {
        edge_cache_entry *e = *p;
        if (e->hash == hash && e->key_len == klen && memcmp(e->data, key, klen) == 0) return p;
    }
    return p;
}

/* Unlinks the entry at *slot from the table and the LRU, dropping the cache's reference. */
static void remove_at(shard *s, edge_cache_entry **slot)
{
    edge_cache_entry *e = *slot;
    *slot = e->hnext;
    lru_unlink(e);
    s->count--;
    s->bytes -= e->size;
    edge_cache_release(e);
}

static void remove_entry(shard *s, edge_cache_entry *e)
{
    remove_at(s, find_slot(s, e->hash, e->data, e->key_len));
}

static void grow_table(shard *s)
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

static edge_cache_entry *lookup(edge_cache *c, const char *key, size_t klen, double now, int count)
{
    uint64_t hash = hash_key(key, klen);
    shard *s = shard_of(c, hash);
    pthread_mutex_lock(&s->lock);
    edge_cache_entry **slot = find_slot(s, hash, key, klen);
    edge_cache_entry *e = *slot;
    if (e && e->expires_at <= now) {
        remove_at(s, slot);
        e = NULL;
    }
    if (e) {
        lru_unlink(e);
        lru_push_front(s, e);
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        if (!edge_cache_entry_is_marker(e)) s->hits += (uint64_t)count;
    } else {
        s->misses += (uint64_t)count;
    }
    pthread_mutex_unlock(&s->lock);
    return e;
}

/* Drops the expired entries of up to n buckets of s, from where the last
 * sweep stopped. Returns the entries dropped. */
static size_t sweep_shard(shard *s, double now, size_t n)
{
    size_t dropped = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n && i < s->n_buckets; i++) {
        size_t b = s->sweep_at++ & (s->n_buckets - 1);
        edge_cache_entry **slot = &s->buckets[b];
        while (*slot) {
            if ((*slot)->expires_at <= now) {
                remove_at(s, slot);
                dropped++;
            } else {
                slot = &(*slot)->hnext;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return dropped;
}

size_t edge_cache_sweep(edge_cache *c, double now, size_t buckets_per_shard)
{
    size_t dropped = 0;
    for (int i = 0; i < SHARDS; i++) dropped += sweep_shard(&c->shards[i], now, buckets_per_shard);
    return dropped;
}

edge_cache_entry *edge_cache_get(edge_cache *c, const char *key, size_t klen, double now)
{
    return lookup(c, key, klen, now, 1);
}

edge_cache_entry *edge_cache_peek(edge_cache *c, const char *key, size_t klen, double now)
{
    return lookup(c, key, klen, now, 0);
}

/* The bytes an entry for resp takes: what is allocated and what counts
 * against the bound. */
size_t edge_cache_object_size(size_t klen, const edge_response *resp)
{
    size_t key_space = (klen + 7) & ~(size_t)7;     /* keeps the header spans aligned */
    return sizeof(edge_cache_entry) + key_space + (size_t)resp->n_headers * sizeof(edge_header) +
           resp->data.len + resp->body.len;
}

/* Lays a response out in one allocation: key, header spans, header bytes, body. */
static edge_cache_entry *make_entry(const char *key, size_t klen, const edge_response *resp,
                                    uint64_t hash, double now, double ttl)
{
    size_t spans = (size_t)resp->n_headers * sizeof(edge_header);
    size_t size = edge_cache_object_size(klen, resp);
    edge_cache_entry *e = edge_malloc(size);
    memset(e, 0, sizeof(*e));
    atomic_init(&e->refs, 1);
    e->status = resp->status;
    e->hash = hash;
    e->stored_at = now;
    e->expires_at = now + ttl;
    e->size = size;
    e->key_len = (uint32_t)klen;
    e->n_headers = (uint32_t)resp->n_headers;
    e->header_bytes = (uint32_t)resp->data.len;
    e->body_len = resp->body.len;
    memcpy(e->data, key, klen);
    if (spans) memcpy((char *)edge_cache_entry_headers(e), resp->headers, spans);
    if (resp->data.len) memcpy((char *)edge_cache_entry_header_data(e), resp->data.base, resp->data.len);
    if (resp->body.len) memcpy((char *)edge_cache_entry_body(e), resp->body.base, resp->body.len);
    return e;
}

int edge_cache_put(edge_cache *c, const char *key, size_t klen, const edge_response *resp,
                   double now, double ttl)
{
    uint64_t hash = hash_key(key, klen);
    shard *s = shard_of(c, hash);
    if (edge_cache_object_size(klen, resp) > c->max_object || ttl <= 0) return EDGE_ERROR;
    edge_cache_entry *e = make_entry(key, klen, resp, hash, now, ttl);   /* outside the lock */

    pthread_mutex_lock(&s->lock);
    edge_cache_entry **slot = find_slot(s, hash, key, klen);
    if (*slot) remove_at(s, slot);
    while (s->bytes + e->size > s->max_bytes && s->lru.lru_prev != &s->lru) {
        remove_entry(s, s->lru.lru_prev);
        s->evictions++;
    }
    if (s->count >= s->n_buckets) grow_table(s);
    slot = find_slot(s, hash, key, klen);
    *slot = e;
    lru_push_front(s, e);
    s->count++;
    s->bytes += e->size;
    pthread_mutex_unlock(&s->lock);
    return EDGE_OK;
}

int edge_cache_purge(edge_cache *c, const char *key, size_t klen)
{
    uint64_t hash = hash_key(key, klen);
    shard *s = shard_of(c, hash);
    pthread_mutex_lock(&s->lock);
    edge_cache_entry **slot = find_slot(s, hash, key, klen);
    int found = *slot != NULL;
    if (found) remove_at(s, slot);
    pthread_mutex_unlock(&s->lock);
    return found;
}

void edge_cache_get_stats(edge_cache *c, edge_cache_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->max_bytes = c->max_bytes;
    for (int i = 0; i < SHARDS; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        st->entries += s->count;
        st->bytes += s->bytes;
        st->hits += s->hits;
        st->misses += s->misses;
        st->evictions += s->evictions;
        pthread_mutex_unlock(&s->lock);
    }
}

void edge_cache_entry_to_response(const edge_cache_entry *e, edge_response *resp)
{
    const edge_header *h = edge_cache_entry_headers(e);
    const char *data = edge_cache_entry_header_data(e);
    resp->status = e->status;
    for (uint32_t i = 0; i < e->n_headers; i++)
        edge_response_add_header(resp, data + h[i].name.off, h[i].name.len, data + h[i].value.off,
                                 h[i].value.len);
    edge_buf_append(&resp->body, edge_cache_entry_body(e), e->body_len);
}

/* ---- coalescing ---- */

static flight **find_flight(shard *s, uint64_t hash, const char *key, size_t klen)
{
    flight **p = &s->flights[(hash >> 8) & (FLIGHT_BUCKETS - 1)];
    for (; *p; p = &(*p)->next)
        if ((*p)->hash == hash && (*p)->klen == klen && memcmp((*p)->key, key, klen) == 0) return p;
    return p;
}

int edge_cache_flight_join(edge_cache *c, const char *key, size_t klen, edge_cache_waiter *w)
{
    uint64_t hash = hash_key(key, klen);
    shard *s = shard_of(c, hash);
    pthread_mutex_lock(&s->lock);
    flight **p = find_flight(s, hash, key, klen);
    int rc = EDGE_AGAIN;
    if (*p) {
        w->next = (*p)->waiters;
        (*p)->waiters = w;
    } else {
        flight *f = edge_calloc(1, sizeof(*f) + klen);
        f->hash = hash;
        f->klen = klen;
        memcpy(f->key, key, klen);
        *p = f;
        rc = EDGE_OK;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void edge_cache_flight_done(edge_cache *c, const char *key, size_t klen)
{
    uint64_t hash = hash_key(key, klen);
    shard *s = shard_of(c, hash);
    pthread_mutex_lock(&s->lock);
    flight **p = find_flight(s, hash, key, klen);
    flight *f = *p;
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
    uint64_t hash = hash_key(key, klen);
    shard *s = shard_of(c, hash);
    int found = 0;
    pthread_mutex_lock(&s->lock);
    flight **p = find_flight(s, hash, key, klen);
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
    for (int i = 0; i < SHARDS; i++) {
        shard *s = &c->shards[i];
        while (s->lru.lru_next != &s->lru) remove_entry(s, s->lru.lru_next);
        for (int b = 0; b < FLIGHT_BUCKETS; b++) {
            while (s->flights[b]) {
                flight *f = s->flights[b];
                s->flights[b] = f->next;
                free(f);
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(c);
}
