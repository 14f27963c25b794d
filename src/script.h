/* A worker's Lua VM and the hooks of the script loaded in it.
 *
 * Every hook run (access, cache_key, respond, on_response, log, a timer's
 * function) happens in a coroutine taken from the VM's pool, and may wait in
 * edge.sleep (an ev_timer) or edge.fetch / edge.proxy (edge_script_wait),
 * also from coroutines the script makes (lua_coroutine.c); the loop resumes
 * it when the wait ends. The request's edge_lua_ctx holds the coroutine, the
 * req userdata, the timer and the wait's cancel hook, and
 * edge_script_cancel() releases them all. */
#ifndef EDGE_SCRIPT_H
#define EDGE_SCRIPT_H

#include <ev.h>
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

#include "lua_ctx.h"
#include "lua_edge.h"

struct edge_cache;
struct edge_counters;
struct edge_health;

struct edge_request;
struct edge_lua_nest;

/* The script's hooks, in the order a request meets them. */
enum edge_hook {
    EDGE_HOOK_ACCESS,         /* before the cache: may answer (EDGE_DONE) */
    EDGE_HOOK_CACHE_KEY,
    EDGE_HOOK_RESPOND,
    EDGE_HOOK_ON_RESPONSE,    /* before the response's head goes out: may change it */
    EDGE_HOOK_LOG,            /* after: a task on a copy of the request */
    EDGE_HOOK_COUNT,
    EDGE_HOOK_TASK = EDGE_HOOK_COUNT   /* a function of the script's (timers) */
};

#define EDGE_SCRIPT_POOL 1024     /* idle coroutines kept for reuse (~1 KiB each) */

typedef struct edge_script {
    lua_State *L;
    int        hook_ref[EDGE_HOOK_COUNT];   /* LUA_NOREF for a hook the script lacks */
    lua_State *pool[EDGE_SCRIPT_POOL];      /* finished coroutines, anchored by pool_ref */
    int        pool_ref[EDGE_SCRIPT_POOL];
    int        pool_n;
    struct edge_lua_nest *nest;   /* the nested resumes in progress (lua_coroutine.h) */
    long       budget;            /* VM instructions per hook run */
    struct ev_loop *loop;         /* NULL outside a worker (edge -t) */
    struct edge_request *current; /* the request whose Lua is running now */
    edge_lua_runtime rt;
    int        refs;              /* requests holding Lua state in this VM */
    size_t     mem_used;          /* bytes the VM allocated */
    size_t     mem_limit;         /* --lua-memory; 0: no limit */
    struct edge_counters *counters;   /* the worker's, or NULL (edge -t) */
    struct edge_health *health;   /* active checks while this is the live script, or NULL */
    unsigned   retired : 1;       /* replaced by a reload: closed when refs reaches 0 */
} edge_script;

/* Creates the VM and loads the script at path. On failure returns EDGE_ERROR
 * with a message naming the file and line in err. */
int edge_script_open(edge_script *s, const char *path, long budget, struct ev_loop *loop,
                     int worker_id, struct edge_cache *cache, double cache_ttl, char *err, size_t errlen);
/* Multiplies edge.sleep's durations: 1 in the server, 0 under the fuzzer
 * (the same yield and resume, without waiting). */
extern double edge_script_sleep_scale;

/* The memory bound for VMs opened from now on (--lua-memory; 0: none). */
void edge_script_set_memory_limit(size_t bytes);
/* Closes the VM (stopping its health checks first). No request may still use it. */
void edge_script_close(edge_script *s);
/* Stops the VM's active health checks, if any: in-flight checks are
 * cancelled. For a drain; retiring and closing do it too. */
void edge_script_stop_checks(edge_script *s);
/* For a heap-allocated VM replaced by a reload (or at exit): stops its
 * health checks at once, then closes and frees it now if no request uses it,
 * else when the last one releases it. */
void edge_script_retire(edge_script *s);

static inline int edge_script_has(const edge_script *s, enum edge_hook h)
{
    return s->hook_ref[h] != LUA_NOREF;
}

/* Called when a hook run that waited is over, with what edge_script_run
 * would have returned. */
typedef void (*edge_script_done_fn)(struct edge_request *req, int rc);

/* Runs hook (the script has it) on req, in a coroutine:
 * - access: EDGE_OK to go on, EDGE_DONE when it answered (req->resp filled);
 * - cache_key: EDGE_OK (req->cache_key set when it returned a string);
 * - respond: EDGE_OK (req->resp filled);
 * - on_response: EDGE_OK (req->resp's status and fields as the hook left them);
 * or EDGE_ERROR (logged), or EDGE_AGAIN: it waits, and done(req, rc) is
 * called when it is over. req keeps its req userdata until released. */
int edge_script_run(edge_script *s, struct edge_request *req, enum edge_hook hook, edge_script_done_fn done);
/* For an edge API that waits: raises "<what> cannot wait here: ..." unless
 * L belongs to a hook run and every thread up to the run's coroutine can
 * yield; returns its request. */
struct edge_request *edge_script_waitable(lua_State *L, edge_script *s, const char *what);
/* Yields req's coroutine; the C function returns this call's result. Until
 * edge_script_wake, a request released early (its client went away) calls
 * cancel(ud) first. On wake, k (or nothing when NULL) continues the C
 * function as lua_yieldk does; an error raised there fails respond. */
int edge_script_wait(lua_State *L, struct edge_request *req, edge_lua_cancel_fn cancel, void *ud,
                     lua_KFunction k);
/* What req waited for happened: resumes its coroutine. May finish the
 * request (and free it); never call it after cancel ran. */
void edge_script_wake(struct edge_request *req);
/* Releases the request's Lua state: stops its timer, drops its coroutine and
 * marks its req userdata finished. Safe to call on an idle context. */
void edge_script_release(struct edge_request *req);
/* The same, for a request the client gave up on (logged when it was waiting). */
void edge_script_cancel(struct edge_request *req);

/* ---- tasks: Lua runs that answer no client (timers, the log phase) ----
 *
 * Runs the function at stack index -(nargs + 1) of s->L (the VM's main
 * thread) with the nargs values above it, in a coroutine of its own that may
 * wait like a request's (edge.sleep, edge.fetch). Pops them. The task is
 * owned by the VM: it holds a reference on it (a retired VM stays open until
 * its tasks end), counts in w->n_tasks while it lives (a drain waits for
 * them, up to --drain-timeout) and is cancelled when the worker stops. what
 * names it in log lines ("timer", "log"). Returns EDGE_OK when it ran to its
 * end or is waiting, EDGE_ERROR when it failed (logged with file:line). */
struct edge_worker;
int edge_script_spawn(edge_script *s, struct edge_worker *w, int nargs, const char *what);
/* Cancels every task of the worker's (at stop, after the loop ended). */
void edge_script_cancel_tasks(struct edge_worker *w);
/* Cancels the worker's tasks that run in a VM a reload replaced (they had
 * --drain-timeout to end): a retired VM is freed once its last task ends. */
void edge_script_cancel_retired_tasks(struct edge_worker *w);
/* The log phase: runs the script's log(req, res) as a task on a copy of
 * req, once the loop turns (the response goes out first). */
void edge_script_log(edge_script *s, struct edge_request *req);

#endif
