/* The admin API's purge: PURGE or DELETE /cache?key=K, ?prefix=P or ?tag=T,
 * with an optional soft=1 (or soft=true). Runs on the admin thread; the
 * cache takes each shard's lock only for a bounded batch at a time, so the
 * workers keep serving while many entries are purged. */
#ifndef EDGE_ADMIN_PURGE_H
#define EDGE_ADMIN_PURGE_H

#include <stddef.h>

#include "buf.h"

struct edge_cache;

/* Purges what the query query[0, n) (the target's part after '?'; n 0 for
 * none) names, as of now, and appends the answer to body: {"purged":N} or
 * {"error":"why"}, then a newline. Returns the HTTP status, 200 or 400. */
int edge_admin_purge(struct edge_cache *cache, const char *query, size_t n, double now, edge_buf *body);

#endif
