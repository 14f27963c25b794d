/* edge.fetch(url, opts) in the server: checks the arguments, builds the
 * request, starts it (upstream_fetch.h) and waits in the respond coroutine
 * like edge.sleep; resumed with res, or nil and a message. */
#ifndef EDGE_LUA_FETCH_H
#define EDGE_LUA_FETCH_H

#include <lua.h>

/* The edge_lua_runtime fetch function; ud is the edge_script. */
int edge_lua_fetch(lua_State *L, void *ud);

#endif
