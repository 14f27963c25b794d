/* Converting what a respond hook returns into an edge_response. */
#ifndef EDGE_LUA_RESPONSE_H
#define EDGE_LUA_RESPONSE_H

#include <lua.h>
#include <stddef.h>

struct edge_response;

/* Reads the table at idx ({ status =, headers =, body =, ttl =, cache = }) into resp.
 * Returns EDGE_OK, or EDGE_ERROR with err saying what was expected. Header
 * names are stored lower-case; content-length, transfer-encoding and
 * connection are the core's to set and are ignored. Never raises. */
int edge_lua_to_response(lua_State *L, int idx, struct edge_response *resp, char *err, size_t errlen);

#endif
