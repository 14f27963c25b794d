/* A per-thread cache of small blocks by size class, for allocators that
 * churn many short-lived objects of a few sizes (nghttp2's streams, frames
 * and header buffers: a dozen allocations per HTTP/2 stream). A freed block
 * goes on its class's list and the next allocation of that class takes it
 * back, without malloc's locking and bin searches; beyond SLAB_KEEP blocks a
 * class gives blocks back to malloc, so the cache is bounded (about 2 MiB).
 * Not thread-safe: one slab per worker, used only by that worker's thread.
 * Blocks carry a 16-byte header naming their class, so free and realloc need
 * no size. Under AddressSanitizer nothing is cached (a use after free stays
 * visible). */
#ifndef EDGE_SLAB_H
#define EDGE_SLAB_H

#include <stddef.h>

#define SLAB_CLASSES 7          /* 64, 128, ..., 4096 bytes */

typedef struct edge_slab {
    void    *free[SLAB_CLASSES];
    unsigned n_free[SLAB_CLASSES];
} edge_slab;

void *edge_slab_alloc(edge_slab *s, size_t n);          /* NULL when out of memory */
void *edge_slab_calloc(edge_slab *s, size_t count, size_t n);
void *edge_slab_realloc(edge_slab *s, void *p, size_t n);
void  edge_slab_free(edge_slab *s, void *p);            /* NULL-safe */
/* Gives every cached block back to malloc (the worker's exit). */
void  edge_slab_drain(edge_slab *s);

#endif
