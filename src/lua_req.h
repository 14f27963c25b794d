/* The `req` value hooks receive: a userdata over the C request whose fields
 * are built on first access (most hooks read two fields; a header table per
 * request would be a measurable cost). Fields assigned by the script, and
 * tables built once (headers, args), are kept in the userdata's user value. */
#ifndef EDGE_LUA_REQ_H
#define EDGE_LUA_REQ_H

#include <lua.h>

struct edge_request;

typedef struct edge_lua_req {
    struct edge_request *req;   /* NULL once the request finished: "closed" */
} edge_lua_req;

/* Registers the metatable; call once per lua_State. */
void edge_lua_req_register(lua_State *L);
/* Pushes a new userdata for req and returns it. */
edge_lua_req *edge_lua_req_push(lua_State *L, struct edge_request *req);

/* Whether idx is the userdata of req (a live request, not another one). */
int edge_lua_req_is(lua_State *L, int idx, const struct edge_request *req);

/* Sets t[key] = value (key and value on top of the stack, popped); a key
 * already there turns into a list of its values, in order. */
void edge_lua_add_repeatable(lua_State *L, int t);

/* Parses a query string into the table on top of the stack, like OpenResty's
 * ngx.req.get_uri_args: percent-decoding, '+' as space, repeated keys become
 * lists, a key without '=' is true. */
void edge_lua_parse_args(lua_State *L, const char *q, size_t n);

#endif
