/* Storing a streamed response (edge.proxy) while it goes to the client: a
 * pipe tap (body_pipe.h) that copies the head when the response starts,
 * appends the body as it passes, and stores the entry only once the body
 * is complete - never a part of one. A body past --cache-max-object is
 * given up (and logged at info); the client still gets all of it.
 *
 * The writer can also hold the request's coalescing flight: waiters then
 * wake when the entry is stored (and find it) or given up (and compute). */
#ifndef EDGE_CACHE_WRITER_H
#define EDGE_CACHE_WRITER_H

#include <ev.h>
#include <stddef.h>

#include "buf.h"
#include "cache.h"
#include "request.h"

struct edge_pipe;

typedef struct edge_cache_writer_args {
    struct edge_cache *cache;
    const edge_response *head;   /* copied: status, headers, ttl */
    struct ev_loop *loop;        /* its ev_now() when the body is complete is the store's time */
    edge_cache_life life;        /* its lifetimes (cache.h) */
    const char *key;             /* where the entry goes (the variant's key under Vary) */
    size_t      klen;
    const char *marker_key;      /* Vary: the base key, where a marker names the fields; else NULL */
    size_t      marker_klen;
    const edge_buf *vary_names;
    const char *flight_key;      /* the flight the writer ends, or NULL */
    size_t      flight_klen;
    uint64_t    conn_id;         /* for the log line */
    const char *request_id;
} edge_cache_writer_args;

/* Adds the writer to pipe. */
void edge_cache_writer_attach(struct edge_pipe *pipe, const edge_cache_writer_args *a);

/* Copies a response's status, header fields and cache fields (not the body). */
void edge_response_copy_head(edge_response *to, const edge_response *from);

#endif
