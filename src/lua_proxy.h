/* edge.proxy(req, target [, opts]): the client's request sent on to an
 * origin, the origin's response streamed back (README, "Putting edge in front
 * of your site"). Waits like edge.fetch until the response head is in. */
#ifndef EDGE_LUA_PROXY_H
#define EDGE_LUA_PROXY_H

#include <lua.h>

/* The edge_lua_runtime proxy function; ud is the edge_script. */
int edge_lua_proxy(lua_State *L, void *ud);

#endif
