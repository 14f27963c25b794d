/* A streamed body as a Lua value: what edge.proxy puts in res.body. The
 * userdata owns the pipe until a response takes it; a stream the script
 * drops (res.body replaced, res never returned) is closed by __gc, which
 * cancels the origin read. */
#ifndef EDGE_LUA_BODY_STREAM_H
#define EDGE_LUA_BODY_STREAM_H

#include <lua.h>

struct edge_pipe;

/* Pushes a stream userdata that owns pipe, listed on lent (the request's
 * list: see edge_pipe_lend) unless NULL. */
void edge_lua_body_stream_push(lua_State *L, struct edge_pipe *pipe, struct edge_pipe **lent);
/* The pipe of the stream at idx, taken out of it (the caller owns it now);
 * NULL when idx is not a stream, or its pipe was taken already. */
struct edge_pipe *edge_lua_body_stream_take(lua_State *L, int idx);
/* Whether idx holds a stream userdata (taken or not). */
int edge_lua_is_body_stream(lua_State *L, int idx);

#endif
