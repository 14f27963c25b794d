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

/* An entry's three lifetimes (Varnish's ttl/grace/keep), in seconds, all
 * counted from the moment it stops being fresh except ttl:
 *   fresh   [stored, stored + ttl)            served as a hit
 *   grace   [expiry, expiry + grace)          stale-while-revalidate: served at once
 *                                             while one refresh runs in the background
 *   keep    [expiry, expiry + keep)           stale-if-error: served only when the
 *                                             refresh (or a miss) fails
 * The entry is held (and returned by edge_cache_lookup) until
 * expiry + max(grace, keep); then it is gone. */
#define EDGE_CACHE_LIFE_MAX (10.0 * 365 * 86400)   /* each lifetime is cut to ten years */
typedef struct edge_cache_life {
    double ttl;
    double grace;
    double keep;
} edge_cache_life;

typedef struct edge_cache_entry {
    struct edge_cache_entry *hnext;              /* hash chain */
    struct edge_cache_entry *lru_prev, *lru_next;
    atomic_int refs;                             /* the cache holds one while linked */
    int       status;
    uint64_t  hash;
    double    stored_at;
    double    expires_at;                        /* the end of fresh (a soft purge moves it to now) */
    double    grace;                             /* seconds past expires_at (edge_cache_life) */
    double    keep;
    size_t    size;                              /* bytes counted against the bound */
    uint32_t  key_len;
    uint32_t  n_headers;
    uint32_t  header_bytes;
    size_t    body_len;
    struct edge_cache_tag_link *tags;            /* the entry's tags (cache.c owns them) */
    uint32_t  n_tags;
    uint32_t  flags;                             /* EDGE_CACHE_ENTRY_* */
    char      data[];   /* key | edge_header[n_headers] (spans into the header bytes) | header bytes | body */
} edge_cache_entry;

/* What an entry keeps of its response besides status, fields and body. */
enum { EDGE_CACHE_ENTRY_NO_COMPRESS = 1 };      /* res.compress = false */

/* Where an entry stands at a given time. */
enum { EDGE_CACHE_FRESH, EDGE_CACHE_GRACE, EDGE_CACHE_KEEP, EDGE_CACHE_GONE };
static inline int edge_cache_entry_state(const edge_cache_entry *e, double now)
{
    if (now < e->expires_at) return EDGE_CACHE_FRESH;
    double past = now - e->expires_at;
    if (past < e->grace) return EDGE_CACHE_GRACE;
    if (past < e->keep) return EDGE_CACHE_KEEP;
    return EDGE_CACHE_GONE;
}

typedef struct edge_cache_stats {
    uint64_t entries, bytes, max_bytes, hits, misses, evictions, purged;
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

/* Looks key up. Returns a referenced entry (release it) or NULL.
 * flags: EDGE_CACHE_COUNT counts the look as a hit (fresh, or in grace with
 * EDGE_CACHE_STALE) or a miss; markers count neither (the look-up they lead
 * to does). EDGE_CACHE_STALE also returns entries past their freshness that
 * are still held (grace or keep: check edge_cache_entry_state); without it
 * only fresh entries come back. An entry past all its lifetimes is dropped. */
enum { EDGE_CACHE_COUNT = 1, EDGE_CACHE_STALE = 2 };
edge_cache_entry *edge_cache_lookup(edge_cache *c, const char *key, size_t klen, double now,
                                    unsigned flags);
/* edge_cache_lookup(..., EDGE_CACHE_COUNT): a fresh entry or NULL. */
edge_cache_entry *edge_cache_get(edge_cache *c, const char *key, size_t klen, double now);
/* edge_cache_lookup(..., 0): the same, not counted (a second look by the same request). */
edge_cache_entry *edge_cache_peek(edge_cache *c, const char *key, size_t klen, double now);
/* Gives back a reference from a look-up. */
void edge_cache_release(edge_cache_entry *e);
/* Takes one more reference to an entry one already holds. */
static inline void edge_cache_entry_hold(edge_cache_entry *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}
/* Stores resp under key for life (life->ttl > 0), replacing an older entry
 * and evicting the least recently used ones to stay in bounds. The
 * response's Surrogate-Key and Cache-Tag fields (space- or comma-separated)
 * tag the entry (edge_cache_purge_tag); a key with a '\0' in it is a
 * derived key (a Vary variant, a compressed copy): the part before the '\0'
 * is its base key, purged with it. EDGE_ERROR when the entry alone is
 * larger than the largest entry the cache takes (not stored). */
int edge_cache_put_life(edge_cache *c, const char *key, size_t klen, const edge_response *resp,
                        double now, const edge_cache_life *life);
/* edge_cache_put_life with { ttl, 0, 0 }. */
int edge_cache_put(edge_cache *c, const char *key, size_t klen, const edge_response *resp,
                   double now, double ttl);
/* Drops entries past all their lifetimes, looking at up to
 * buckets_per_shard hash buckets of each shard from where the last sweep
 * stopped (a sweep a second covers a table of 16 x buckets_per_shard
 * buckets in a second; larger ones over several). Returns the entries
 * dropped. Such entries are never served; the sweep frees their memory and
 * keeps the entry gauges honest. */
size_t edge_cache_sweep(edge_cache *c, double now, size_t buckets_per_shard);

/* ---- purge ----
 * Hard: the entries are removed. Soft: they become stale now (expires_at =
 * now) and keep their grace and keep, so a stale copy is still served while
 * one refresh runs, or when the origin fails. Each returns the number of
 * entries purged (derived keys included), and takes each shard's lock only
 * for a bounded batch at a time, so workers are never stalled behind a
 * purge of many entries. */
enum { EDGE_PURGE_HARD = 0, EDGE_PURGE_SOFT = 1 };
/* The entry at key and every entry derived from it (Vary variants,
 * compressed copies). */
size_t edge_cache_purge_key(edge_cache *c, const char *key, size_t klen, int soft, double now);
/* Every entry whose key begins with prefix (an empty prefix: all). */
size_t edge_cache_purge_prefix(edge_cache *c, const char *prefix, size_t plen, int soft, double now);
/* Every entry tagged tag (Surrogate-Key / Cache-Tag of its response). */
size_t edge_cache_purge_tag(edge_cache *c, const char *tag, size_t tlen, int soft, double now);
/* Removes the entry at key only (hard); 1 when it was there. */
int edge_cache_purge(edge_cache *c, const char *key, size_t klen);
void edge_cache_get_stats(edge_cache *c, edge_cache_stats *st);

/* Markers: entries that hold no response (status < 100), never served.
 * A Vary marker at a response's key names, in its one header "vary", the
 * request fields that select the variant (edge_cache_policy_variant_key
 * gives the variant's key). A pass marker (hit-for-pass) says the key's
 * last response was not cacheable: requests for it go to the origin
 * without waiting for one another, until it expires or a cacheable
 * response replaces it. */
#define EDGE_CACHE_MARKER_STATUS 0
#define EDGE_CACHE_PASS_STATUS 1
static inline int edge_cache_entry_is_marker(const edge_cache_entry *e)
{
    return e->status < 100;
}
static inline int edge_cache_entry_is_vary(const edge_cache_entry *e)
{
    return e->status == EDGE_CACHE_MARKER_STATUS;
}
static inline int edge_cache_entry_is_pass(const edge_cache_entry *e)
{
    return e->status == EDGE_CACHE_PASS_STATUS;
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
/* Leads a flight for key only if none runs: EDGE_OK (end it with
 * edge_cache_flight_done) or EDGE_AGAIN (one runs; nothing was joined).
 * A background refresh takes its key's flight this way. */
int edge_cache_flight_try_lead(edge_cache *c, const char *key, size_t klen);
/* Ends the caller's flight: wakes every waiter (outside the lock). */
void edge_cache_flight_done(edge_cache *c, const char *key, size_t klen);
/* Takes w off its flight. 1 when it was still waiting there; 0 when the flight
 * already ended and w->wake was (or is being) called. */
int edge_cache_flight_leave(edge_cache *c, const char *key, size_t klen, edge_cache_waiter *w);

#endif
