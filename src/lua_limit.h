/* edge.limit: rate limiters kept in shared dictionaries (shared_dict.h), so
 * every worker thread draws on one budget per key.
 *
 *   edge.limit.req(dict_name, rate, burst) -> lim    leaky bucket (resty.limit.req)
 *   edge.limit.count(dict_name, limit, window) -> lim fixed window (resty.limit.count)
 *   lim:incoming(key, commit) -> delay, excess | 0, remaining | nil, "rejected", retry_after
 *   lim:uncommit(key)
 *
 * Times come from the runtime's now (edge.now: ev_now in the server, the
 * virtual clock in busted). */
#ifndef EDGE_LUA_LIMIT_H
#define EDGE_LUA_LIMIT_H

#include "lua_edge.h"

#include <lua.h>

/* Pushes the edge.limit table; its limiters read the time from rt, which
 * must outlive the lua_State. */
void edge_lua_limit_open(lua_State *L, const edge_lua_runtime *rt);

#endif
