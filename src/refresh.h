/* Background refreshes: an entry in grace (stale-while-revalidate) is
 * served at once, and one request of edge's own, tied to no client, runs the
 * script for its key and stores the answer. A client that leaves does not
 * cancel it; a worker that stops does.
 *
 * The refresh is a copy of the request that found the entry (method, target,
 * fields, the client's address for X-Forwarded-For) minus the client's
 * conditional and Range fields: HEAD becomes GET. It holds the key's
 * coalescing flight, taken with edge_cache_flight_try_lead by the caller, so
 * exactly one runs per key across the workers. Only GET and HEAD are
 * refreshed (a copy carries no body). Its response is stored by the
 * dispatcher as any miss's is; a streamed body is read for the cache
 * writer while it wants it, then dropped. */
#ifndef EDGE_REFRESH_H
#define EDGE_REFRESH_H

#include <stddef.h>

#include "request.h"

struct edge_worker;
struct edge_cache_entry;

typedef struct edge_refresh edge_refresh;

/* Starts the refresh of stale (held by from's look-up; the refresh takes a
 * reference of its own) for the flight key the caller leads; the flight
 * passes to the refresh. It runs on the next loop turn, so the client that
 * found the entry is answered first even when the script does not yield. */
void edge_refresh_start(edge_request *from, struct edge_cache_entry *stale, const char *flight_key,
                        size_t flight_klen);

/* Cancels every refresh of the worker (it is stopping): scripts, origin
 * reads and flights end; memory is freed. */
void edge_refresh_cancel_all(struct edge_worker *w);

#endif
