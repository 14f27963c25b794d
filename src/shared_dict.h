/* Shared dictionaries: named key/value stores in C, shared by every worker
 * thread of the process (and by the busted module's single thread), kept
 * across SIGHUP reloads. OpenResty's ngx.shared.DICT model: values are
 * strings, numbers or booleans; each key may carry a TTL; each dictionary is
 * bounded in bytes and evicts its least recently used keys when a write needs
 * room (a write that evicted a key that had not expired reports forcible).
 *
 * Every operation takes the dictionary's lock for a short, bounded time; no
 * callback into Lua runs under it. Times are seconds on the caller's clock
 * (ev_now in the server, the virtual clock in busted), passed in as now. */
#ifndef EDGE_SHARED_DICT_H
#define EDGE_SHARED_DICT_H

#include <stddef.h>
#include <stdint.h>

typedef struct edge_shdict edge_shdict;

enum edge_shdict_type { EDGE_SHDICT_NIL = 0, EDGE_SHDICT_BOOLEAN, EDGE_SHDICT_NUMBER, EDGE_SHDICT_STRING };

/* A value going in or coming out. A string's bytes belong to the caller
 * going in; coming out they are copied into the caller's buffer (see get). */
typedef struct edge_shdict_value {
    enum edge_shdict_type type;
    double      number;         /* NUMBER; BOOLEAN: 0 or 1 */
    const char *str;            /* STRING */
    size_t      len;
} edge_shdict_value;

/* Results of the writing operations. */
enum {
    EDGE_SHDICT_OK = 0,
    EDGE_SHDICT_EXISTS = 1,     /* add: the key is there (and not expired) */
    EDGE_SHDICT_NOT_FOUND = 2,  /* replace, incr without init: no such key */
    EDGE_SHDICT_NO_MEMORY = 3,  /* no room even after evicting (safe_* never evict) */
    EDGE_SHDICT_NOT_NUMBER = 4  /* incr on a value that is not a number */
};

/* ---- the process's dictionaries ---- */

/* Keys are 1 to EDGE_SHDICT_MAX_KEY bytes (callers check; a longer key is
 * refused by the writes as EDGE_SHDICT_NO_MEMORY). A dictionary holds 1k to
 * 1024g bytes; a value larger than the capacity (with its key and about 80
 * bytes of overhead) never fits. */
#define EDGE_SHDICT_MAX_KEY 65535


/* Finds or makes the dictionary name with a bound of capacity bytes.
 * Returns it, or NULL with a message in err: a name already defined with
 * another capacity (a reload keeps the dictionary and its contents; changing
 * its size needs a restart), a bad name or size. Thread-safe; dictionaries
 * live until edge_shdict_free_all at exit. */
edge_shdict *edge_shdict_define(const char *name, size_t capacity, char *err, size_t errlen);
/* The dictionary of that name, or NULL. */
edge_shdict *edge_shdict_find(const char *name, size_t len);
/* Calls fn for each dictionary (metrics). */
void edge_shdict_each(void (*fn)(edge_shdict *d, void *ud), void *ud);
void edge_shdict_free_all(void);

/* ---- one dictionary ---- */

const char *edge_shdict_name(const edge_shdict *d);

typedef struct edge_shdict_stats {
    size_t   capacity;
    size_t   bytes;             /* what the stored keys take, overhead included (expired
                                   keys count until a write or flush_expired frees them) */
    uint64_t keys;              /* stored keys, expired ones not yet freed included */
    uint64_t evictions;         /* keys evicted before they expired */
} edge_shdict_stats;
void edge_shdict_get_stats(edge_shdict *d, edge_shdict_stats *out);

/* get: copies the value into out; a string's bytes go into buf (cap bytes;
 * *needed says the length when it did not fit, and nothing is copied: call
 * again with a larger buf). Returns 1 when found and not expired, else 0.
 * stale: also an expired key not yet removed (get_stale), *expired saying so. */
int edge_shdict_get(edge_shdict *d, const char *key, size_t klen, double now, int stale,
                    edge_shdict_value *out, char *buf, size_t cap, size_t *needed, int *expired);

/* Writes: ttl <= 0 means no expiry. flags: */
enum {
    EDGE_SHDICT_SET_ADD     = 1,   /* only when absent (or expired) */
    EDGE_SHDICT_SET_REPLACE = 2,   /* only when present */
    EDGE_SHDICT_SET_SAFE    = 4    /* never evict a live key to make room */
};
/* set/add/replace/safe_*: *forcible (may be NULL) tells whether live keys
 * were evicted to make room. A NIL value deletes. A write first frees expired
 * keys from the least recently used end, then (unless SAFE) evicts live ones.
 * When a rewrite fails for memory, the key keeps its old value. */
int edge_shdict_set(edge_shdict *d, const char *key, size_t klen, const edge_shdict_value *v, double ttl,
                    unsigned flags, double now, int *forcible);

/* incr: adds delta to a number. When the key is absent: with has_init, stores
 * init + delta with init_ttl (<= 0: none); without, EDGE_SHDICT_NOT_FOUND.
 * An existing key keeps its ttl. *result is the new value. */
int edge_shdict_incr(edge_shdict *d, const char *key, size_t klen, double delta, int has_init, double init,
                     double init_ttl, double now, double *result, int *forcible);

/* An atomic read-modify-write of one key (rate limiters): fn runs under the
 * lock with the current number (cur; has 0 when the key is absent, expired or
 * not a number) and *ttl set to the key's seconds left (0: no expiry, or no
 * key), and returns 1 to store *next with ttl *ttl (<= 0: none; left as it
 * came, the key keeps its expiry), 0 to leave the key as it is. fn must be
 * short and never call back into Lua or the dictionary. Returns what fn
 * returned, or -1 when storing failed for memory. */
typedef int (*edge_shdict_update_fn)(void *ud, int has, double cur, double *next, double *ttl);
int edge_shdict_update(edge_shdict *d, const char *key, size_t klen, double now, edge_shdict_update_fn fn,
                       void *ud);

/* Removes the key (expired or not); returns whether it was there. */
int    edge_shdict_delete(edge_shdict *d, const char *key, size_t klen);
/* Returns 1 and the seconds left in *ttl_left (0: no expiry) for a live key,
 * 0 when absent or expired. */
int    edge_shdict_ttl(edge_shdict *d, const char *key, size_t klen, double now, double *ttl_left);
/* Sets a live key's ttl (<= 0: no expiry); 0 when not found. */
int    edge_shdict_expire(edge_shdict *d, const char *key, size_t klen, double ttl, double now);
/* Marks every key expired (OpenResty's flush_all); flush_expired frees up to
 * max (0: all) expired keys and returns how many. */
void   edge_shdict_flush_all(edge_shdict *d);
size_t edge_shdict_flush_expired(edge_shdict *d, double now, size_t max);
/* Calls fn for up to max (0: all) live keys, most recently used first
 * (get_keys); the key bytes are
 * valid only during the call, which runs under the lock: copy them out. */
size_t edge_shdict_keys(edge_shdict *d, double now, size_t max,
                        void (*fn)(void *ud, const char *key, size_t klen), void *ud);

#endif
