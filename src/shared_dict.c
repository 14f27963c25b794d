/* Shared dictionaries (shared_dict.h): the process's registry of named
 * dictionaries, and each dictionary's hash table, LRU list and expiry.
 *
 * A key lives in one node: one allocation holding the links, the value and
 * the key's bytes (then a string value's). What a dictionary counts against
 * its capacity is the sum of its nodes' sizes, each including two pointers'
 * worth for its share of the bucket array, so the bound covers everything
 * the dictionary allocates. */
#include "shared_dict.h"
#include "common.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DICTS      64
#define NAME_MAX_LEN   64
#define MIN_CAPACITY   ((size_t)1024)
#define MAX_CAPACITY   ((size_t)1 << 40)
/* A write looks at this many keys from the LRU end for expired ones before
 * it evicts live keys: expired keys go first, without a walk of the whole
 * list under the lock. */
#define EXPIRED_SCAN   64
/* Each write also frees up to this many expired keys at the LRU end, as
 * OpenResty does, so dead keys do not sit in the byte count until pressure. */
#define EXPIRED_SWEEP  2

typedef struct node {
    struct node *hnext;         /* the bucket's chain */
    struct node *prev, *next;   /* the LRU list: head is the most recently used */
    double   expires;           /* INFINITY: never; -INFINITY: flushed */
    double   number;
    size_t   vlen;              /* a string value's length */
    uint32_t hash;
    uint16_t klen;
    uint8_t  type;
    char     data[];            /* the key, then a string value's bytes */
} node;

struct edge_shdict {
    pthread_mutex_t lock;
    char     name[NAME_MAX_LEN + 1];
    size_t   capacity;
    size_t   bytes;
    uint64_t keys;
    uint64_t evictions;
    node   **buckets;
    size_t   nbuckets;          /* a power of two, >= keys once grown */
    node    *head, *tail;
};

/* ---- nodes, buckets and the LRU list ---- */

static size_t node_size(size_t klen, size_t vlen)
{
    return sizeof(node) + 2 * sizeof(node *) + klen + vlen;
}

static size_t size_of(const node *n)
{
    return node_size(n->klen, n->vlen);
}

static uint32_t hash_key(const char *key, size_t klen)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (size_t i = 0; i < klen; i++) h = (h ^ (uint8_t)key[i]) * 16777619u;
    return h;
}

static int expired(const node *n, double now)
{
    return n->expires <= now;
}

static double expiry(double ttl, double now)
{
    return ttl > 0 ? now + ttl : INFINITY;
}

static void lru_unlink(edge_shdict *d, node *n)
{
    if (n->prev) n->prev->next = n->next;
    else d->head = n->next;
    if (n->next) n->next->prev = n->prev;
    else d->tail = n->prev;
    n->prev = n->next = NULL;
}

static void lru_push(edge_shdict *d, node *n)
{
    n->prev = NULL;
    n->next = d->head;
    if (d->head) d->head->prev = n;
    else d->tail = n;
    d->head = n;
}

static void lru_touch(edge_shdict *d, node *n)
{
    if (d->head == n) return;
    lru_unlink(d, n);
    lru_push(d, n);
}

static node **slot_of(edge_shdict *d, uint32_t hash)
{
    return &d->buckets[hash & (d->nbuckets - 1)];
}

static node *lookup(edge_shdict *d, const char *key, size_t klen, uint32_t hash)
{
    for (node *n = *slot_of(d, hash); n; n = n->hnext)
        if (n->hash == hash && n->klen == klen && memcmp(n->data, key, klen) == 0) return n;
    return NULL;
}

/* Doubles the bucket array once keys outnumber buckets (never shrinks: the
 * key count, and so the array, is bounded by the capacity). */
static void grow_buckets(edge_shdict *d)
{
    size_t nb = d->nbuckets * 2;
    node **b = edge_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < d->nbuckets; i++)
        for (node *n = d->buckets[i], *next; n; n = next) {
            next = n->hnext;
            n->hnext = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = nb;
}

static void remove_node(edge_shdict *d, node *n)
{
    node **p = slot_of(d, n->hash);
    while (*p != n) p = &(*p)->hnext;
    *p = n->hnext;
    lru_unlink(d, n);
    d->bytes -= size_of(n);
    d->keys--;
    free(n);
}

static void set_value(node *n, const edge_shdict_value *v, double expires)
{
    n->type = (uint8_t)v->type;
    n->number = v->type == EDGE_SHDICT_BOOLEAN ? (v->number != 0) : v->number;
    if (v->type == EDGE_SHDICT_STRING && v->len) memcpy(n->data + n->klen, v->str, v->len);
    n->expires = expires;
}

static size_t value_len(const edge_shdict_value *v)
{
    return v->type == EDGE_SHDICT_STRING ? v->len : 0;
}

static node *insert_node(edge_shdict *d, const char *key, size_t klen, uint32_t hash,
                         const edge_shdict_value *v, double expires)
{
    node *n = edge_malloc(node_size(klen, value_len(v)) - 2 * sizeof(node *));
    n->hash = hash;
    n->klen = (uint16_t)klen;
    n->vlen = value_len(v);
    memcpy(n->data, key, klen);
    set_value(n, v, expires);
    if (d->keys + 1 > d->nbuckets) grow_buckets(d);
    node **slot = slot_of(d, hash);
    n->hnext = *slot;
    *slot = n;
    lru_push(d, n);
    d->bytes += size_of(n);
    d->keys++;
    return n;
}

/* ---- making room ---- */

/* Frees expired keys from the LRU end: up to max freed, looking at no more
 * than EXPIRED_SCAN keys, stopping once `need` more bytes fit. keep is never
 * freed (the key being rewritten). */
static void reclaim_expired(edge_shdict *d, size_t need, size_t kept, const node *keep, double now, int max)
{
    node *n = d->tail;
    for (int looked = 0; n && looked < EXPIRED_SCAN && max > 0; looked++) {
        if (d->bytes - kept + need <= d->capacity && need) return;
        node *prev = n->prev;
        if (n != keep && expired(n, now)) {
            remove_node(d, n);
            max--;
        }
        n = prev;
    }
}

/* Makes room for a node of need bytes replacing keep (kept bytes; NULL, 0:
 * a new key). Expired keys go first; then, unless safe, the least recently
 * used keys, live ones setting *forcible. Returns whether it fits. */
static int make_room(edge_shdict *d, size_t need, const node *keep, size_t kept, int safe, double now,
                     int *forcible)
{
    reclaim_expired(d, 0, kept, keep, now, EXPIRED_SWEEP);
    if (d->bytes - kept + need <= d->capacity) return 1;
    reclaim_expired(d, need, kept, keep, now, EXPIRED_SCAN);
    while (!safe && d->bytes - kept + need > d->capacity) {
        node *victim = d->tail == keep ? keep->prev : d->tail;
        if (victim == NULL) break;
        if (!expired(victim, now)) {
            d->evictions++;
            *forcible = 1;
        }
        remove_node(d, victim);
    }
    return d->bytes - kept + need <= d->capacity;
}

/* Stores v under key, over old (NULL: absent, or an expired node to drop). */
static int store(edge_shdict *d, const char *key, size_t klen, uint32_t hash, node *old,
                 const edge_shdict_value *v, double expires, int safe, double now, int *forcible)
{
    size_t need = node_size(klen, value_len(v));
    if (need > d->capacity || klen == 0 || klen > EDGE_SHDICT_MAX_KEY) return EDGE_SHDICT_NO_MEMORY;
    if (old && old->vlen == value_len(v)) {    /* same size: rewrite in place */
        set_value(old, v, expires);
        lru_touch(d, old);
        return EDGE_SHDICT_OK;
    }
    if (!make_room(d, need, old, old ? size_of(old) : 0, safe, now, forcible)) return EDGE_SHDICT_NO_MEMORY;
    if (old) remove_node(d, old);
    insert_node(d, key, klen, hash, v, expires);
    return EDGE_SHDICT_OK;
}

/* ---- one dictionary's operations ---- */

const char *edge_shdict_name(const edge_shdict *d)
{
    return d->name;
}

void edge_shdict_get_stats(edge_shdict *d, edge_shdict_stats *out)
{
    pthread_mutex_lock(&d->lock);
    *out = (edge_shdict_stats){.capacity = d->capacity, .bytes = d->bytes, .keys = d->keys,
                               .evictions = d->evictions};
    pthread_mutex_unlock(&d->lock);
}

static void copy_out(const node *n, edge_shdict_value *out, char *buf, size_t cap, size_t *needed)
{
    out->type = (enum edge_shdict_type)n->type;
    out->number = n->number;
    out->str = buf;
    out->len = n->vlen;
    *needed = n->vlen;
    if (n->type == EDGE_SHDICT_STRING && n->vlen <= cap && n->vlen) memcpy(buf, n->data + n->klen, n->vlen);
}

int edge_shdict_get(edge_shdict *d, const char *key, size_t klen, double now, int stale,
                    edge_shdict_value *out, char *buf, size_t cap, size_t *needed, int *is_expired)
{
    uint32_t h = hash_key(key, klen);
    pthread_mutex_lock(&d->lock);
    node *n = lookup(d, key, klen, h);
    int found = n && (stale || !expired(n, now));
    if (found) {
        copy_out(n, out, buf, cap, needed);
        if (is_expired) *is_expired = expired(n, now);
        if (!expired(n, now)) lru_touch(d, n);
    }
    pthread_mutex_unlock(&d->lock);
    return found;
}

int edge_shdict_set(edge_shdict *d, const char *key, size_t klen, const edge_shdict_value *v, double ttl,
                    unsigned flags, double now, int *forcible)
{
    int dummy = 0;
    if (forcible == NULL) forcible = &dummy;
    *forcible = 0;
    if (v->type == EDGE_SHDICT_NIL) {
        edge_shdict_delete(d, key, klen);
        return EDGE_SHDICT_OK;
    }
    uint32_t h = hash_key(key, klen);
    pthread_mutex_lock(&d->lock);
    node *n = lookup(d, key, klen, h);
    int live = n && !expired(n, now);
    int rc;
    if ((flags & EDGE_SHDICT_SET_ADD) && live) rc = EDGE_SHDICT_EXISTS;
    else if ((flags & EDGE_SHDICT_SET_REPLACE) && !live) rc = EDGE_SHDICT_NOT_FOUND;
    else rc = store(d, key, klen, h, n, v, expiry(ttl, now), (flags & EDGE_SHDICT_SET_SAFE) != 0, now, forcible);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

int edge_shdict_incr(edge_shdict *d, const char *key, size_t klen, double delta, int has_init, double init,
                     double init_ttl, double now, double *result, int *forcible)
{
    int dummy = 0;
    if (forcible == NULL) forcible = &dummy;
    *forcible = 0;
    uint32_t h = hash_key(key, klen);
    pthread_mutex_lock(&d->lock);
    node *n = lookup(d, key, klen, h);
    int rc = EDGE_SHDICT_OK;
    if (n && !expired(n, now)) {
        if (n->type != EDGE_SHDICT_NUMBER) rc = EDGE_SHDICT_NOT_NUMBER;
        else {
            *result = n->number += delta;
            lru_touch(d, n);
        }
    } else if (!has_init) {
        rc = EDGE_SHDICT_NOT_FOUND;
    } else {
        edge_shdict_value v = {.type = EDGE_SHDICT_NUMBER, .number = init + delta};
        rc = store(d, key, klen, h, n, &v, expiry(init_ttl, now), 0, now, forcible);
        if (rc == EDGE_SHDICT_OK) *result = v.number;
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

int edge_shdict_update(edge_shdict *d, const char *key, size_t klen, double now, edge_shdict_update_fn fn,
                       void *ud)
{
    uint32_t h = hash_key(key, klen);
    int forcible = 0;
    pthread_mutex_lock(&d->lock);
    node *n = lookup(d, key, klen, h);
    int has = n && !expired(n, now) && n->type == EDGE_SHDICT_NUMBER;
    double left = has && !isinf(n->expires) ? n->expires - now : 0;
    double next = 0, ttl = left;
    int r = fn(ud, has, has ? n->number : 0, &next, &ttl);
    if (r == 1) {
        edge_shdict_value v = {.type = EDGE_SHDICT_NUMBER, .number = next};
        double expires = has && ttl == left ? n->expires : expiry(ttl, now);   /* kept exactly */
        if (store(d, key, klen, h, n, &v, expires, 0, now, &forcible) != EDGE_SHDICT_OK) r = -1;
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

int edge_shdict_delete(edge_shdict *d, const char *key, size_t klen)
{
    uint32_t h = hash_key(key, klen);
    pthread_mutex_lock(&d->lock);
    node *n = lookup(d, key, klen, h);
    if (n) remove_node(d, n);
    pthread_mutex_unlock(&d->lock);
    return n != NULL;
}

int edge_shdict_ttl(edge_shdict *d, const char *key, size_t klen, double now, double *ttl_left)
{
    uint32_t h = hash_key(key, klen);
    pthread_mutex_lock(&d->lock);
    node *n = lookup(d, key, klen, h);
    int found = n && !expired(n, now);
    if (found) *ttl_left = isinf(n->expires) ? 0 : n->expires - now;
    pthread_mutex_unlock(&d->lock);
    return found;
}

int edge_shdict_expire(edge_shdict *d, const char *key, size_t klen, double ttl, double now)
{
    uint32_t h = hash_key(key, klen);
    pthread_mutex_lock(&d->lock);
    node *n = lookup(d, key, klen, h);
    int found = n && !expired(n, now);
    if (found) n->expires = expiry(ttl, now);
    pthread_mutex_unlock(&d->lock);
    return found;
}

void edge_shdict_flush_all(edge_shdict *d)
{
    pthread_mutex_lock(&d->lock);
    for (node *n = d->head; n; n = n->next) n->expires = -INFINITY;
    pthread_mutex_unlock(&d->lock);
}

size_t edge_shdict_flush_expired(edge_shdict *d, double now, size_t max)
{
    size_t freed = 0;
    pthread_mutex_lock(&d->lock);
    for (node *n = d->tail, *prev; n && (max == 0 || freed < max); n = prev) {
        prev = n->prev;
        if (!expired(n, now)) continue;
        remove_node(d, n);
        freed++;
    }
    pthread_mutex_unlock(&d->lock);
    return freed;
}

size_t edge_shdict_keys(edge_shdict *d, double now, size_t max,
                        void (*fn)(void *ud, const char *key, size_t klen), void *ud)
{
    size_t count = 0;
    pthread_mutex_lock(&d->lock);
    for (node *n = d->head; n && (max == 0 || count < max); n = n->next) {
        if (expired(n, now)) continue;
        fn(ud, n->data, n->klen);
        count++;
    }
    pthread_mutex_unlock(&d->lock);
    return count;
}

/* ---- the registry ---- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static edge_shdict *dicts[MAX_DICTS];
static int n_dicts;

static edge_shdict *find_locked(const char *name, size_t len)
{
    for (int i = 0; i < n_dicts; i++)
        if (strlen(dicts[i]->name) == len && memcmp(dicts[i]->name, name, len) == 0) return dicts[i];
    return NULL;
}

/* Names are what a /metrics label and edge.shared.NAME can carry as they
 * are; "define" is edge.shared's own function. */
static int valid_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > NAME_MAX_LEN || strcmp(name, "define") == 0) return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") == len;
}

static edge_shdict *new_dict(const char *name, size_t capacity)
{
    edge_shdict *d = edge_calloc(1, sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->capacity = capacity;
    d->nbuckets = 16;
    d->buckets = edge_calloc(d->nbuckets, sizeof(*d->buckets));
    return d;
}

static int check_define(const char *name, size_t capacity, char *err, size_t errlen)
{
    if (!valid_name(name)) {
        snprintf(err, errlen, "bad shared dict name '%s': 1 to %d letters, digits, '_', '-' or '.' "
                 "(and not 'define')", name, NAME_MAX_LEN);
        return EDGE_ERROR;
    }
    if (capacity < MIN_CAPACITY || capacity > MAX_CAPACITY) {
        snprintf(err, errlen, "bad size for shared dict '%s': %zu bytes, expected 1k to 1024g", name, capacity);
        return EDGE_ERROR;
    }
    return EDGE_OK;
}

edge_shdict *edge_shdict_define(const char *name, size_t capacity, char *err, size_t errlen)
{
    if (check_define(name, capacity, err, errlen) != EDGE_OK) return NULL;
    pthread_mutex_lock(&registry_lock);
    edge_shdict *d = find_locked(name, strlen(name));
    if (d && d->capacity != capacity) {
        snprintf(err, errlen, "shared dict '%s' is already defined with %zu bytes, not %zu: "
                 "changing its size needs a restart", name, d->capacity, capacity);
        d = NULL;
    } else if (d == NULL && n_dicts == MAX_DICTS) {
        snprintf(err, errlen, "cannot define shared dict '%s': at most %d dicts", name, MAX_DICTS);
    } else if (d == NULL) {
        d = dicts[n_dicts++] = new_dict(name, capacity);
    }
    pthread_mutex_unlock(&registry_lock);
    return d;
}

edge_shdict *edge_shdict_find(const char *name, size_t len)
{
    pthread_mutex_lock(&registry_lock);
    edge_shdict *d = find_locked(name, len);
    pthread_mutex_unlock(&registry_lock);
    return d;
}

void edge_shdict_each(void (*fn)(edge_shdict *d, void *ud), void *ud)
{
    edge_shdict *copy[MAX_DICTS];
    pthread_mutex_lock(&registry_lock);
    int n = n_dicts;
    memcpy(copy, dicts, sizeof(copy[0]) * (size_t)n);
    pthread_mutex_unlock(&registry_lock);
    for (int i = 0; i < n; i++) fn(copy[i], ud);    /* dicts live until exit: no lock needed */
}

static void free_dict(edge_shdict *d)
{
    while (d->head) remove_node(d, d->head);
    free(d->buckets);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

void edge_shdict_free_all(void)
{
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < n_dicts; i++) free_dict(dicts[i]);
    n_dicts = 0;
    pthread_mutex_unlock(&registry_lock);
}

