/* edge.shared: the process's shared dictionaries (shared_dict.h) in Lua,
 * with OpenResty's ngx.shared.DICT methods and return values.
 *
 *   edge.shared.define(name, size)   finds or makes a dict ("10m", "512k",
 *                                    bytes); another size raises
 *   edge.shared.NAME, edge.shared[name]   the dict, or nil
 *   dict:get(key), dict:set(key, value, exptime), dict:incr(...), ...
 *
 * Times come from the runtime's now (ev_now in the server, the virtual clock
 * in busted), so TTLs follow edge.now(). */
#ifndef EDGE_LUA_SHARED_H
#define EDGE_LUA_SHARED_H

#include <lua.h>

#include "lua_edge.h"

/* Pushes a new `edge.shared` table whose dicts read the time from rt (which
 * must outlive the lua_State); edge_lua_push_module calls it. */
void edge_lua_shared_open(lua_State *L, const edge_lua_runtime *rt);

#endif
