/* The `edge` Lua module (sleep, fetch, now, log, levels, worker_id, version).
 * The same C serves the server and the standalone module used by busted: what
 * differs (how to sleep, what "now" is, where logs go) comes in a runtime. */
#ifndef EDGE_LUA_EDGE_H
#define EDGE_LUA_EDGE_H

#include <lua.h>
#include <stddef.h>

struct edge_cache;
struct edge_response;

/* edge_lua_to_response_protected's third outcome: a Lua error (out of
 * memory) was raised while converting. */
enum { EDGE_LUA_RAISED = -3 };

typedef struct edge_lua_runtime {
    /* The time edge.now() returns, in seconds since the epoch. */
    double (*now)(void *ud);
    /* Implements edge.sleep(seconds) after the argument was checked; returns
     * what the Lua C function returns (lua_yield's result when it yields). */
    int (*sleep)(lua_State *L, double seconds, void *ud);
    /* Implements edge.fetch(url, opts); NULL where there is no loop to wait
     * on (the standalone module): edge.fetch then raises. */
    int (*fetch)(lua_State *L, void *ud);
    /* Implements edge.proxy(req, target, opts); NULL outside the server. */
    int (*proxy)(lua_State *L, void *ud);
    /* Pushes the edge.timer table (lua_timer.h; the busted module's virtual
     * timers); NULL: no edge.timer. */
    void (*push_timer)(lua_State *L, void *ud);
    /* Writes one log line from edge.log; where the line says file:line. */
    void (*log)(lua_State *L, int level, const char *where, const char *msg, void *ud);
    void *ud;
    int   worker_id;
    struct edge_cache *cache;     /* edge.cache; NULL where there is none (edge -t) */
    double cache_ttl;             /* edge.cache.set's default ttl */
} edge_lua_runtime;

/* Pushes a new `edge` module table whose functions use rt (which must outlive
 * the lua_State). */
void edge_lua_push_module(lua_State *L, const edge_lua_runtime *rt);

/* edge_lua_to_response (lua_response.h) under lua_pcall: never raises, even
 * when memory runs out midway (converting a number, interning a field name).
 * Returns EDGE_OK, EDGE_ERROR (a bad value) or EDGE_LUA_RAISED, err saying
 * why; on failure resp may hold part of the response, for the caller to free
 * or reset. */
int edge_lua_to_response_protected(lua_State *L, int idx, struct edge_response *resp, char *err,
                                   size_t errlen);

#endif
