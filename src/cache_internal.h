/* The cache's insides, shared by its three files and by nothing else:
 * cache.c (shards, entries, look-ups, puts, sweeps, flights), cache_tags.c
 * (reading an entry's tags, the per-shard tag index) and cache_purge.c
 * (purges by key, prefix and tag, hard or soft, in bounded batches).
 * Everything here is used with the shard's lock held unless it says not. */
#ifndef EDGE_CACHE_INTERNAL_H
#define EDGE_CACHE_INTERNAL_H

#include <pthread.h>

#include "cache.h"

#define CACHE_SHARDS        16      /* a power of two */
#define CACHE_FLIGHT_BUCKETS 2048   /* per shard: 32k in all, so 25,000 misses in flight walk chains of about one */
#define CACHE_MAX_TAGS      64      /* tags an entry takes from its response */
#define CACHE_MAX_TAG_LEN   256     /* bytes; a longer tag is ignored */
#define CACHE_PURGE_BATCH   1024    /* entries or buckets a purge handles per lock hold */

/* What a tag names: a tag from the response's fields, or the base key of a
 * derived entry (a namespace no response field can write to). */
enum { CACHE_TAG_USER, CACHE_TAG_BASE };

typedef struct cache_tag cache_tag;

/* One entry's membership in one tag's list (circular, through the tag's
 * head). A link whose entry is NULL is the list's head or a purge's
 * cursor, which walks the list between lock holds. */
struct edge_cache_tag_link {
    struct edge_cache_tag_link *prev, *next;
    cache_tag *tag;
    edge_cache_entry *entry;
};

/* A tag in a shard's index: the entries of that shard carrying it. Freed
 * when its list holds no link (no entry, no cursor). */
struct cache_tag {
    cache_tag *hnext;                 /* hash chain */
    uint64_t   hash;
    struct edge_cache_tag_link head;
    uint32_t   len;
    int        kind;                  /* CACHE_TAG_* */
    char       name[];
};

/* The tags a response gives its entry, pointing into the response and key. */
typedef struct cache_tag_name {
    const char *p;
    uint32_t    len;
    int         kind;
} cache_tag_name;

typedef struct cache_tag_set {
    uint32_t       n;
    cache_tag_name t[CACHE_MAX_TAGS + 1];   /* + the base key of a derived entry */
} cache_tag_set;

typedef struct cache_flight cache_flight;

typedef struct cache_shard {
    pthread_mutex_t lock;
    edge_cache_entry **buckets;
    size_t   n_buckets;          /* a power of two; only grows */
    size_t   count;
    size_t   bytes;
    size_t   max_bytes;
    edge_cache_entry lru;        /* sentinel: lru.lru_next is the most recently used */
    cache_flight *flights[CACHE_FLIGHT_BUCKETS];   /* misses in progress, hashed */
    size_t   sweep_at;           /* the bucket the next sweep starts from */
    cache_tag **tags;            /* the tag index: buckets */
    size_t   n_tag_buckets;      /* a power of two */
    size_t   n_tags;
    uint64_t hits, misses, evictions, purged;
} cache_shard;

struct edge_cache {
    size_t max_bytes;
    size_t max_object;           /* the largest entry taken; at most a shard's share */
    cache_shard shards[CACHE_SHARDS];
};

/* ---- cache.c ---- */
uint64_t cache_hash(const char *key, size_t n);
cache_shard *cache_shard_of(edge_cache *c, uint64_t hash);
/* The slot holding key in s's table, or the empty slot ending its chain. */
edge_cache_entry **cache_slot(cache_shard *s, uint64_t hash, const char *key, size_t klen);
/* Unlinks the entry at *slot from the table, the LRU and its tags, and
 * chains it on *grave (through hnext), still holding the cache's
 * reference: cache_bury drops those after the lock is released. */
void cache_remove_at(cache_shard *s, edge_cache_entry **slot, edge_cache_entry **grave);
/* Drops the cache's reference to every entry on grave. Call without the lock. */
void cache_bury(edge_cache_entry *grave);
/* The bytes malloc'd for e (its size also counts its tags' index nodes). */
size_t cache_entry_alloc_size(const edge_cache_entry *e);
void cache_lru_unlink(edge_cache_entry *e);

/* ---- cache_tags.c ---- */
/* Reads the tags of an entry for resp under key: its Surrogate-Key and
 * Cache-Tag fields (none for a marker), and the base key when key is
 * derived. No lock needed. */
void cache_tags_read(const char *key, size_t klen, const edge_response *resp, cache_tag_set *ts);
/* The bytes ts adds to an entry: its links, their alignment, and for each
 * a whole tag node (an upper bound, however the nodes are shared). */
size_t cache_tags_charge(const cache_tag_set *ts);
/* Links e (whose links were laid out by the put) into the lists of ts's tags. */
void cache_tags_link(cache_shard *s, edge_cache_entry *e, const cache_tag_set *ts);
/* Takes e off every tag list, freeing the tags left empty. */
void cache_tags_unlink(cache_shard *s, edge_cache_entry *e);
cache_tag *cache_tag_find(cache_shard *s, int kind, const char *name, size_t len);
/* Frees t when its list holds nothing. */
void cache_tag_drop_if_empty(cache_shard *s, cache_tag *t);
void cache_tag_list_remove(struct edge_cache_tag_link *l);
void cache_tag_list_insert_after(struct edge_cache_tag_link *at, struct edge_cache_tag_link *l);
/* Frees the index of a shard whose entries are all gone. */
void cache_tags_free(cache_shard *s);

#endif
