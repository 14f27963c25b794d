/* Purges: by exact key (with the keys derived from it), by key prefix, by
 * tag; hard (the entries are removed) or soft (they become stale now and
 * keep their grace and keep). Each holds a shard's lock for at most
 * CACHE_PURGE_BATCH entries or buckets at a time, and frees what it removed
 * only after letting the lock go, so a purge of 100,000 entries never keeps
 * a worker waiting long for a shard. */
#include "cache_internal.h"
#include "common.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A purge in progress: what it does and what it has done. */
typedef struct purge {
    int    soft;
    double now;
    const char *under;           /* a tag walk takes only keys derived from this one; NULL: all */
    size_t under_len;
    const char *prefix;          /* a table walk takes only keys beginning with this */
    size_t prefix_len;
    size_t count;                /* entries purged */
} purge;

/* replace_with_copy copies an entry from its status on: what comes before
 * (the table, LRU links and the atomic reference count) is set afresh. */
_Static_assert(offsetof(edge_cache_entry, hnext) < offsetof(edge_cache_entry, status) &&
               offsetof(edge_cache_entry, lru_next) < offsetof(edge_cache_entry, status) &&
               offsetof(edge_cache_entry, refs) < offsetof(edge_cache_entry, status),
               "edge_cache_entry: links and refs must come before status");

/* Puts a copy of the entry at *slot in its place (table, LRU, tag lists)
 * and sends the original to the grave; returns the copy. */
static edge_cache_entry *replace_with_copy(cache_shard *s, edge_cache_entry **slot, edge_cache_entry **grave)
{
    edge_cache_entry *old = *slot;
    size_t size = cache_entry_alloc_size(old), from = offsetof(edge_cache_entry, status);
    edge_cache_entry *e = edge_malloc(size);
    memcpy((char *)e + from, (const char *)old + from, size - from);
    atomic_init(&e->refs, 1);
    e->hnext = old->hnext;
    *slot = e;
    e->lru_prev = old->lru_prev;
    e->lru_next = old->lru_next;
    e->lru_prev->lru_next = e;
    e->lru_next->lru_prev = e;
    if (e->n_tags) e->tags = (struct edge_cache_tag_link *)(void *)((char *)e + ((char *)old->tags - (char *)old));
    for (uint32_t i = 0; i < e->n_tags; i++) {
        struct edge_cache_tag_link *l = &e->tags[i];     /* prev, next and tag copied from old's link */
        l->entry = e;
        l->prev->next = l;
        l->next->prev = l;
    }
    old->hnext = *grave;
    *grave = old;
    return e;
}

/* Makes the entry at *slot stale at now. An entry a caller holds never
 * changes under it (it reads expires_at without the lock): when anyone but
 * the cache holds it, a copy takes its place. With only the cache's
 * reference, no one else can get it while the lock is held. */
static void make_stale(cache_shard *s, edge_cache_entry **slot, double now, edge_cache_entry **grave)
{
    edge_cache_entry *e = *slot;
    if (atomic_load_explicit(&e->refs, memory_order_acquire) > 1) e = replace_with_copy(s, slot, grave);
    e->expires_at = now;
}

/* Purges the entry at *slot. Returns 1 when it left the table (*slot then
 * holds the next one), 0 when it stayed (stale, maybe as a copy at *slot).
 * An entry already past all its lifetimes is dropped without counting. */
static int purge_at(cache_shard *s, edge_cache_entry **slot, purge *p, edge_cache_entry **grave)
{
    edge_cache_entry *e = *slot;
    int state = edge_cache_entry_state(e, p->now);
    if (state != EDGE_CACHE_GONE) {
        p->count++;
        s->purged++;
    }
    if (state == EDGE_CACHE_GONE || !p->soft || (e->grace <= 0 && e->keep <= 0)) {
        cache_remove_at(s, slot, grave);     /* soft without grace or keep: gone at once anyway */
        return 1;
    }
    if (state == EDGE_CACHE_FRESH) make_stale(s, slot, p->now, grave);
    return 0;
}

/* ---- by tag ---- */

static int derived_from(const edge_cache_entry *e, const purge *p)
{
    return p->under == NULL || (e->key_len > p->under_len && memcmp(e->data, p->under, p->under_len) == 0 &&
                                e->data[p->under_len] == '\0');
}

/* Purges up to a batch of the entries past the cursor, moving it past
 * them (a soft purge leaves them in the list). 0 when the list is done. */
static int purge_tag_batch(cache_shard *s, struct edge_cache_tag_link *cursor, purge *p, edge_cache_entry **grave)
{
    for (int i = 0; i < CACHE_PURGE_BATCH; i++) {
        struct edge_cache_tag_link *l = cursor->next;
        if (l == &cursor->tag->head) return 0;
        cache_tag_list_remove(cursor);
        cache_tag_list_insert_after(l, cursor);
        edge_cache_entry *e = l->entry;                   /* NULL: another purge's cursor */
        if (e && derived_from(e, p)) purge_at(s, cache_slot(s, e->hash, e->data, e->key_len), p, grave);
    }
    return 1;
}

/* A cursor in the tag's list keeps the tag alive and marks the way between
 * lock holds; entries stored meanwhile go before it (cache_tags_link). */
static void purge_tag_in_shard(cache_shard *s, int kind, const char *name, size_t len, purge *p)
{
    struct edge_cache_tag_link cursor = {0};
    pthread_mutex_lock(&s->lock);
    cache_tag *t = cache_tag_find(s, kind, name, len);
    if (t == NULL) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    cursor.tag = t;
    cache_tag_list_insert_after(&t->head, &cursor);
    for (;;) {
        edge_cache_entry *grave = NULL;
        int more = purge_tag_batch(s, &cursor, p, &grave);
        if (!more) {
            cache_tag_list_remove(&cursor);
            cache_tag_drop_if_empty(s, t);
        }
        pthread_mutex_unlock(&s->lock);
        cache_bury(grave);
        if (!more) return;
        pthread_mutex_lock(&s->lock);
    }
}

static void purge_tagged(edge_cache *c, int kind, const char *name, size_t len, purge *p)
{
    for (int i = 0; i < CACHE_SHARDS; i++) purge_tag_in_shard(&c->shards[i], kind, name, len, p);
}

size_t edge_cache_purge_tag(edge_cache *c, const char *tag, size_t tlen, int soft, double now)
{
    purge p = {.soft = soft, .now = now};
    purge_tagged(c, CACHE_TAG_USER, tag, tlen, &p);
    return p.count;
}

/* ---- by key ---- */

static void purge_exact(edge_cache *c, const char *key, size_t klen, purge *p)
{
    uint64_t hash = cache_hash(key, klen);
    cache_shard *s = cache_shard_of(c, hash);
    edge_cache_entry *grave = NULL;
    pthread_mutex_lock(&s->lock);
    edge_cache_entry **slot = cache_slot(s, hash, key, klen);
    if (*slot) purge_at(s, slot, p, &grave);
    pthread_mutex_unlock(&s->lock);
    cache_bury(grave);
}

/* The derived entries are indexed under their base key (the part before
 * the first '\0'); of those, the ones derived from key itself are taken. */
size_t edge_cache_purge_key(edge_cache *c, const char *key, size_t klen, int soft, double now)
{
    purge p = {.soft = soft, .now = now};
    purge_exact(c, key, klen, &p);
    const char *nul = klen ? memchr(key, '\0', klen) : NULL;
    p.under = key;
    p.under_len = klen;
    purge_tagged(c, CACHE_TAG_BASE, key, nul ? (size_t)(nul - key) : klen, &p);
    return p.count;
}

int edge_cache_purge(edge_cache *c, const char *key, size_t klen)
{
    uint64_t hash = cache_hash(key, klen);
    cache_shard *s = cache_shard_of(c, hash);
    edge_cache_entry *grave = NULL;
    pthread_mutex_lock(&s->lock);
    edge_cache_entry **slot = cache_slot(s, hash, key, klen);
    int found = *slot != NULL;
    if (found) {
        cache_remove_at(s, slot, &grave);
        s->purged++;
    }
    pthread_mutex_unlock(&s->lock);
    cache_bury(grave);
    return found;
}

/* ---- by prefix ---- */

static void purge_bucket(cache_shard *s, size_t b, purge *p, edge_cache_entry **grave)
{
    edge_cache_entry **slot = &s->buckets[b];
    while (*slot) {
        edge_cache_entry *e = *slot;
        int match = p->prefix_len == 0 || (e->key_len >= p->prefix_len && memcmp(e->data, p->prefix, p->prefix_len) == 0);
        if (!match || !purge_at(s, slot, p, grave)) slot = &(*slot)->hnext;
    }
}

/* Walks s's table a batch of buckets per lock hold. The table may double
 * between holds: bucket b of the table the walk began with is then buckets
 * b, b + n0, b + 2 n0... of the new one, so the walk goes on by the first
 * numbering, and meets every entry there at the start exactly once. */
static void purge_prefix_in_shard(cache_shard *s, purge *p)
{
    size_t n0 = 0, b = 0;
    do {
        edge_cache_entry *grave = NULL;
        pthread_mutex_lock(&s->lock);
        if (n0 == 0) n0 = s->n_buckets;
        for (size_t looked = 0; b < n0 && looked < CACHE_PURGE_BATCH; b++)
            for (size_t nb = b; nb < s->n_buckets; nb += n0, looked++) purge_bucket(s, nb, p, &grave);
        pthread_mutex_unlock(&s->lock);
        cache_bury(grave);
    } while (b < n0);
}

size_t edge_cache_purge_prefix(edge_cache *c, const char *prefix, size_t plen, int soft, double now)
{
    purge p = {.soft = soft, .now = now, .prefix = prefix, .prefix_len = plen};
    for (int i = 0; i < CACHE_SHARDS; i++) purge_prefix_in_shard(&c->shards[i], &p);
    return p.count;
}
