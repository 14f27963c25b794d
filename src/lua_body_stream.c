/* res.body of a proxied response (lua_body_stream.h). */
#include "lua_body_stream.h"
#include "body_pipe.h"

#include <lauxlib.h>

#define STREAM_MT "edge.body_stream"

typedef struct body_stream {
    edge_pipe *pipe;
} body_stream;

static int stream_gc(lua_State *L)
{
    body_stream *s = luaL_checkudata(L, 1, STREAM_MT);
    if (s->pipe) {
        edge_pipe_unlend(s->pipe);
        edge_pipe_close(s->pipe);
    }
    s->pipe = NULL;
    return 0;
}

static int stream_tostring(lua_State *L)
{
    body_stream *s = luaL_checkudata(L, 1, STREAM_MT);
    lua_pushstring(L, s->pipe ? "edge.body_stream (streaming)" : "edge.body_stream (taken)");
    return 1;
}

void edge_lua_body_stream_push(lua_State *L, edge_pipe *pipe, edge_pipe **lent)
{
    /* Nothing that can raise (out of memory) runs once the userdata owns
     * the pipe: until then the caller still does. */
    body_stream *s = lua_newuserdatauv(L, sizeof(*s), 0);
    s->pipe = NULL;
    if (luaL_newmetatable(L, STREAM_MT)) {
        lua_pushcfunction(L, stream_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, stream_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, stream_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    s->pipe = pipe;
    if (lent) edge_pipe_lend(pipe, lent, &s->pipe);
}

int edge_lua_is_body_stream(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, STREAM_MT) != NULL;
}

edge_pipe *edge_lua_body_stream_take(lua_State *L, int idx)
{
    body_stream *s = luaL_testudata(L, idx, STREAM_MT);
    if (s == NULL) return NULL;
    edge_pipe *p = s->pipe;
    s->pipe = NULL;
    if (p) edge_pipe_unlend(p);
    return p;
}
