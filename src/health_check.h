/* Active health checks of named upstreams, on a worker's loop.
 *
 * For each upstream of a VM defined with health.active, every server gets
 * `GET path` every `interval` seconds (the first one at a random point of
 * the first interval, so workers and servers do not align), on a new
 * connection with the upstream's TLS settings, bounded by `timeout`. A 2xx
 * or 3xx answer passes; anything else fails. `fall` consecutive failures
 * take the server out of its balancer (edge_balancer_set_checked), `rise`
 * consecutive passes put it back. No Lua runs and nothing blocks: each check
 * is an edge_upstream_fetch.
 *
 * The checks of a VM run while it is its worker's live script: worker.c
 * starts them once the VM is loaded, and script.c stops them (cancelling
 * every check in flight) when the VM is replaced by a reload, closed, or the
 * worker drains. A retired VM is never kept alive by its checks.
 *
 * edge_upstream_server_up{upstream,server} (rendered by metrics.c from the
 * admin thread) is 0 while at least one worker's checks have the server
 * down, 1 otherwise; only servers under active checks appear. */
#ifndef EDGE_HEALTH_CHECK_H
#define EDGE_HEALTH_CHECK_H

#include <lua.h>

struct edge_worker;
struct edge_buf;

typedef struct edge_health edge_health;

/* Starts the checks of every upstream of L's VM that has health.active, on
 * w's loop. NULL when there is none to run (nothing to stop then). */
edge_health *edge_health_start(struct edge_worker *w, lua_State *L);
/* Stops every check at once: in-flight checks are cancelled (their
 * connections closed), timers stopped, and the servers leave the metric.
 * Frees h; NULL is fine. The balancers keep their last state. */
void edge_health_stop(edge_health *h);

/* Appends edge_upstream_server_up for every server under active checks in
 * any worker. Thread-safe (called by the admin thread). */
void edge_health_render(struct edge_buf *out);

#endif
