/* The response cache: shared by every worker, sharded (each shard its own
 * lock, hash table and LRU list), bounded in bytes, per-entry expiry.
 *
 * Entries are reference-counted: edge_cache_get() returns a reference the
 * caller gives back with edge_cache_release(), so an entry evicted or purged
 * while it is being copied out stays valid until then.
 *
 * It also coalesces misses: the first request for a missing key leads a
 * "flight"; later ones for the same key join it as waiters and are woken
 * (through a callback the caller provides, which must not block) when the
 * leader finishes. Time is always passed in, so tests can control it. */
#ifndef EDGE_CACHE_H
#define EDGE_CACHE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "request.h"

typedef struct edge_cache edge_cache;

typedef struct edge_cache_entry {
    struct edge_cache_entry *hnext;              /* hash chain */
    struct edge_cache_entry *lru_prev, *lru_next;
    atomic_int refs;                             /* the cache holds one while linked */
    int       status;
    uint64_t  hash;
    double    stored_at;
    double    expires_at;
    size_t    size;                              /* bytes counted against the bound */
    uint32_t  key_len;
    uint32_t  n_headers;
    uint32_t  header_bytes;
    size_t    body_len;
    char      data[];   /* key | edge_header[n_headers] (spans into the header bytes) | header bytes | body */
} edge_cache_entry;

typedef struct edge_cache_stats {
    uint64_t entries, bytes, max_bytes, hits, misses, evictions;
} edge_cache_stats;

/* A request waiting for another request's response to the same key. Owned by
 * the waiting side; the cache only links it and hands it to wake(). */
typedef struct edge_cache_waiter {
    struct edge_cache_waiter *next;
    void (*wake)(struct edge_cache_waiter *w);   /* called without cache locks held */
} edge_cache_waiter;

/* Creates a cache bounded to max_bytes in all; the largest entry it takes is
 * a shard's share, max_bytes / 16, until edge_cache_set_max_object. */
edge_cache *edge_cache_new(size_t max_bytes);
/* Sets the largest entry (edge_cache_object_size) the cache takes; at most a
 * shard's share. Call before the cache is shared. */
void edge_cache_set_max_object(edge_cache *c, size_t max_object);
/* The largest entry the cache takes, in bytes. */
size_t edge_cache_max_object(const edge_cache *c);
/* The bytes an entry for resp under a key of klen bytes counts against the bound. */
size_t edge_cache_object_size(size_t klen, const edge_response *resp);
/* Frees the cache. No flight may be pending and no entry referenced. */
void edge_cache_free(edge_cache *c);

/* Looks key up; a fresh entry comes back referenced (release it), an expired
 * one is dropped. Counts a hit or a miss; a Vary marker counts neither (the
 * look-up of the variant it leads to does). */
edge_cache_entry *edge_cache_get(edge_cache *c, const char *key, size_t klen, double now);
/* The same, without counting a hit or a miss (a second look by the same request). */
edge_cache_entry *edge_cache_peek(edge_cache *c, const char *key, size_t klen, double now);
/* Gives back a reference from edge_cache_get. */
void edge_cache_release(edge_cache_entry *e);
/* Stores resp under key for ttl seconds, replacing an older entry and evicting
 * the least recently used ones to stay in bounds. EDGE_ERROR when the entry
 * alone is larger than the largest entry the cache takes (not stored). */
int edge_cache_put(edge_cache *c, const char *key, size_t klen, const edge_response *resp,
                   double now, double ttl);
/* Drops expired entries, looking at up to buckets_per_shard hash buckets of
 * each shard from where the last sweep stopped (a sweep a second covers a
 * table of 16 x buckets_per_shard buckets in a second; larger ones over
 * several). Returns the entries dropped. Expired entries are never served;
 * the sweep frees their memory and keeps the entry gauges honest. */
size_t edge_cache_sweep(edge_cache *c, double now, size_t buckets_per_shard);
/* Removes key; 1 when it was there. */
int edge_cache_purge(edge_cache *c, const char *key, size_t klen);
void edge_cache_get_stats(edge_cache *c, edge_cache_stats *st);

/* A Vary marker: an entry at a response's key saying that the response
 * varied, with one header, "vary", naming the request fields that select the
 * variant (edge_cache_policy_variant_key gives the variant's key). */
#define EDGE_CACHE_MARKER_STATUS 0
static inline int edge_cache_entry_is_marker(const edge_cache_entry *e)
{
    return e->status == EDGE_CACHE_MARKER_STATUS;
}

/* Entry accessors. */
static inline const char *edge_cache_entry_key(const edge_cache_entry *e)
{
    return e->data;
}
static inline const edge_header *edge_cache_entry_headers(const edge_cache_entry *e)
{
    return (const edge_header *)(const void *)(e->data + ((e->key_len + 7) & ~7u));
}
static inline const char *edge_cache_entry_header_data(const edge_cache_entry *e)
{
    return (const char *)(edge_cache_entry_headers(e) + e->n_headers);
}
static inline const char *edge_cache_entry_body(const edge_cache_entry *e)
{
    return edge_cache_entry_header_data(e) + e->header_bytes;
}
/* Copies an entry into a response (status, headers, body). */
void edge_cache_entry_to_response(const edge_cache_entry *e, edge_response *resp);

/* Coalescing. Returns EDGE_OK when the caller now leads a flight for key (it
 * must end it with edge_cache_flight_done), or EDGE_AGAIN when w joined the
 * flight already running (w->wake follows). */
int edge_cache_flight_join(edge_cache *c, const char *key, size_t klen, edge_cache_waiter *w);
/* Ends the caller's flight: wakes every waiter (outside the lock). */
void edge_cache_flight_done(edge_cache *c, const char *key, size_t klen);
/* Takes w off its flight. 1 when it was still waiting there; 0 when the flight
 * already ended and w->wake was (or is being) called. */
int edge_cache_flight_leave(edge_cache *c, const char *key, size_t klen, edge_cache_waiter *w);

#endif
