/* The admin listener: plain HTTP on its own thread and loop (loopback by
 * default), serving GET /metrics (Prometheus text format) and GET /healthz.
 * It only reads the workers' counters; it never touches their state. */
#ifndef EDGE_ADMIN_H
#define EDGE_ADMIN_H

#include <stddef.h>

struct edge_worker;
struct edge_cache;

/* Opens addr and starts the admin thread. EDGE_OK, or EDGE_ERROR with err. */
int edge_admin_start(const char *addr, struct edge_worker *workers, int n_workers,
                     struct edge_cache *cache, char *err, size_t errlen);
/* Stops the thread and closes everything (no-op when not started). */
void edge_admin_stop(void);

#endif
