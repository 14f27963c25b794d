/* The admin listener: plain HTTP on its own thread and loop (loopback by
 * default), serving GET /metrics (Prometheus text format), GET /healthz and
 * PURGE/DELETE /cache (admin_purge.h). It reads the workers' counters and
 * purges the shared cache; it never touches a worker's state. */
#ifndef EDGE_ADMIN_H
#define EDGE_ADMIN_H

#include <stddef.h>

struct edge_worker;
struct edge_cache;
struct edge_admin_auth;

/* Opens addr and starts the admin thread. With auth (admin_auth.h, which
 * must outlive the thread), /cache and /metrics need its token. EDGE_OK,
 * or EDGE_ERROR with err. */
int edge_admin_start(const char *addr, struct edge_worker *workers, int n_workers,
                     struct edge_cache *cache, struct edge_admin_auth *auth, char *err, size_t errlen);
/* Stops the thread and closes everything (no-op when not started). */
void edge_admin_stop(void);

#endif
