/* The lazy `req` userdata. */
#include "lua_req.h"
#include "common.h"
#include "request.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define REQ_MT "edge.request"

static edge_request *check_open(lua_State *L)
{
    edge_lua_req *ud = luaL_checkudata(L, 1, REQ_MT);
    if (ud->req == NULL) luaL_error(L, "attempt to use a finished request");
    return ud->req;
}

static void push_span(lua_State *L, const edge_request *req, edge_span s)
{
    if (s.off == EDGE_SPAN_NONE) lua_pushnil(L);
    else lua_pushlstring(L, edge_request_ptr(req, s), s.len);
}

/* Adds value (top of stack) under key (below it) in table t, turning a repeated
 * key into a list. Pops key and value. */
void edge_lua_add_repeatable(lua_State *L, int t)
{
    lua_pushvalue(L, -2);
    lua_rawget(L, t);
    int prev = lua_type(L, -1);
    if (prev == LUA_TNIL) {
        lua_pop(L, 1);
        lua_rawset(L, t);
        return;
    }
    if (prev != LUA_TTABLE) {          /* second value: make a list of both */
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -2);
        lua_rawseti(L, -2, 2);
        lua_remove(L, -2);
        lua_rawset(L, t);
        return;
    }
    lua_insert(L, -2);                 /* key list value */
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 2);
}

static void push_headers(lua_State *L, const edge_request *req)
{
    lua_createtable(L, 0, req->n_headers);
    int t = lua_gettop(L);
    for (int i = 0; i < req->n_headers; i++) {
        const edge_header *h = &req->headers[i];
        push_span(L, req, h->name);
        push_span(L, req, h->value);
        edge_lua_add_repeatable(L, t);
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Pushes p[0..n) percent-decoded, '+' as space. */
static void push_decoded(lua_State *L, const char *p, size_t n)
{
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '+') out[o++] = ' ';
        else if (p[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)p[i + 1])) >= 0 &&
                 (lo = hexval((unsigned char)p[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else out[o++] = p[i];
    }
    luaL_pushresultsize(&b, o);
}

void edge_lua_parse_args(lua_State *L, const char *q, size_t n)
{
    int t = lua_gettop(L);
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && q[end] != '&') end++;
        const char *eq = memchr(q + i, '=', end - i);
        if (end > i && eq != q + i) {          /* skip empty pairs and "=v" */
            size_t klen = eq ? (size_t)(eq - (q + i)) : end - i;
            push_decoded(L, q + i, klen);
            if (eq) push_decoded(L, eq + 1, (size_t)(q + end - eq - 1));
            else lua_pushboolean(L, 1);
            edge_lua_add_repeatable(L, t);
        }
        i = end + 1;
    }
}

static void push_remote_addr(lua_State *L, const edge_request *req)
{
    char text[64];
    edge_request_peer_ip(req, text, sizeof(text));
    lua_pushstring(L, text);
}

/* ---- rewriting the request (access) ---- */

/* The bound on a request's stored bytes once rewritten (each rewrite
 * appends): rewrites change a few fields, they are not a way to grow C
 * memory without bound. */
#define REWRITE_MAX (1u << 20)

static void check_room(lua_State *L, const edge_request *req, size_t n)
{
    if (req->data.len + n > REWRITE_MAX)
        luaL_error(L, "request rewrite: the request's fields would pass %u bytes", REWRITE_MAX);
}

/* Bytes allowed in a path or query: visible ASCII but '#' (and '?' in a path). */
static int valid_target_part(const char *s, size_t n, int is_path)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '#' || (is_path && c == '?')) return 0;
    }
    return 1;
}

/* Forgets a table built from the request's fields (headers, args), so the
 * next read sees the rewrite. */
static void forget_cached(lua_State *L, const char *field)
{
    if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
        lua_pushnil(L);
        lua_setfield(L, -2, field);
    }
    lua_pop(L, 1);
}

static void set_path(lua_State *L, edge_request *req)
{
    size_t n;
    const char *p = luaL_checklstring(L, 3, &n);
    if (n == 0 || p[0] != '/' || !valid_target_part(p, n, 1))
        luaL_error(L, "req.path must start with '/' and hold no space, control byte, '?' or '#'");
    check_room(L, req, n);
    req->path = edge_request_store(req, p, n);
    forget_cached(L, "path");
}

static void set_query(lua_State *L, edge_request *req)
{
    if (lua_isnil(L, 3)) {
        req->query = (edge_span){EDGE_SPAN_NONE, 0};
    } else {
        size_t n;
        const char *q = luaL_checklstring(L, 3, &n);
        if (!valid_target_part(q, n, 0)) luaL_error(L, "req.query must hold no space, control byte or '#'");
        check_room(L, req, n);
        req->query = edge_request_store(req, q, n);
    }
    forget_cached(L, "query");
    forget_cached(L, "args");
}

/* req:set_header(name, value | list): replaces the field; req:clear_header(name). */
static int req_set_header(lua_State *L)
{
    edge_request *req = check_open(L);
    size_t nlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    char lower[256];
    luaL_argcheck(L, nlen > 0 && nlen < sizeof(lower), 2, "a field name of 1 to 255 bytes");
    for (size_t i = 0; i < nlen; i++) {
        if (!edge_http_is_tchar((unsigned char)name[i])) luaL_argerror(L, 2, "not a valid field name");
        lower[i] = (char)tolower((unsigned char)name[i]);
    }
    int list = lua_istable(L, 3);
    if (!list && !lua_isnoneornil(L, 3)) luaL_checkstring(L, 3);
    lua_Integer n = list ? (lua_Integer)lua_rawlen(L, 3) : !lua_isnoneornil(L, 3);
    size_t total = 0;
    for (lua_Integer i = 1; i <= n; i++) {       /* every value checked before anything changes */
        if (list) lua_rawgeti(L, 3, i);
        else lua_pushvalue(L, 3);
        size_t vlen;
        const char *v = lua_tolstring(L, -1, &vlen);
        if (v == NULL || memchr(v, '\r', vlen) || memchr(v, '\n', vlen) || memchr(v, '\0', vlen))
            luaL_argerror(L, 3, "values must be strings without CR, LF or NUL");
        total += vlen + nlen;
        check_room(L, req, total);
        lua_pop(L, 1);
    }
    edge_request_remove_header(req, lower, nlen);
    for (lua_Integer i = 1; i <= n; i++) {
        if (list) lua_rawgeti(L, 3, i);
        else lua_pushvalue(L, 3);
        size_t vlen;
        const char *v = lua_tolstring(L, -1, &vlen);
        edge_request_add_header(req, lower, nlen, v, vlen);
        if (nlen == 4 && memcmp(lower, "host", 4) == 0) edge_request_set_host(req, v, vlen);
        lua_pop(L, 1);
    }
    forget_cached(L, "headers");
    return 0;
}

static int req_clear_header(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushnil(L);
    return req_set_header(L);
}

/* Pushes the built-in field `key`; returns 0 when there is none, 2 when the
 * value is a table worth keeping in the user value. */
static int push_field(lua_State *L, edge_request *req, const char *key, size_t len)
{
    switch (len) {
    case 2:
        if (memcmp(key, "id", 2) == 0) return lua_pushstring(L, edge_request_id(req)), 1;
        break;
    case 4:
        if (memcmp(key, "path", 4) == 0) return push_span(L, req, req->path), 1;
        if (memcmp(key, "host", 4) == 0) return push_span(L, req, req->host), 1;
        if (memcmp(key, "args", 4) == 0) {
            lua_newtable(L);
            if (req->query.off != EDGE_SPAN_NONE)
                edge_lua_parse_args(L, edge_request_ptr(req, req->query), req->query.len);
            return 2;
        }
        if (memcmp(key, "body", 4) == 0) {
            if (req->has_body && !req->body_streamed) lua_pushlstring(L, req->body.base ? req->body.base : "", req->body.len);
            else lua_pushnil(L);
            return 1;
        }
        break;
    case 5:
        if (memcmp(key, "query", 5) == 0) return push_span(L, req, req->query), 1;
        break;
    case 6:
        if (memcmp(key, "method", 6) == 0) return push_span(L, req, req->method), 1;
        if (memcmp(key, "scheme", 6) == 0) return lua_pushstring(L, req->scheme), 1;
        break;
    case 7:
        if (memcmp(key, "headers", 7) == 0) return push_headers(L, req), 2;
        if (memcmp(key, "version", 7) == 0) return lua_pushstring(L, req->version), 1;
        break;
    case 10:
        if (memcmp(key, "set_header", 10) == 0) return lua_pushcfunction(L, req_set_header), 1;
        break;
    case 11:
        if (memcmp(key, "remote_addr", 11) == 0) return push_remote_addr(L, req), 1;
        break;
    case 12:
        if (memcmp(key, "clear_header", 12) == 0) return lua_pushcfunction(L, req_clear_header), 1;
        break;
    case 13:    /* a body past --body-buffer: not in req.body, edge.proxy streams it */
        if (memcmp(key, "body_streamed", 13) == 0) return lua_pushboolean(L, req->body_streamed), 1;
        break;
    }
    return 0;
}

/* __index: values the script stored or tables built earlier first, then the
 * built-in fields. */
static int req_index(lua_State *L)
{
    edge_request *req = check_open(L);
    if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, -2) != LUA_TNIL) return 1;
        lua_pop(L, 1);
    }
    size_t len;
    const char *key = lua_tolstring(L, 2, &len);
    if (key == NULL || lua_type(L, 2) != LUA_TSTRING) return lua_pushnil(L), 1;
    int r = push_field(L, req, key, len);
    if (r == 0) return lua_pushnil(L), 1;
    if (r == 2) {                       /* keep the table: later reads see the same one */
        if (lua_type(L, 3) != LUA_TTABLE) {
            lua_newtable(L);
            lua_replace(L, 3);
            lua_pushvalue(L, 3);
            lua_setiuservalue(L, 1, 1);
        }
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, 3);
    }
    return 1;
}

/* __newindex: path and query rewrite the request (what later hooks and
 * edge.proxy see); any other field is the script's own, or overrides a
 * built-in one for the script only. */
static int req_newindex(lua_State *L)
{
    edge_request *req = check_open(L);
    size_t klen;
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &klen) : NULL;
    if (key && klen == 4 && memcmp(key, "path", 4) == 0) return set_path(L, req), 0;
    if (key && klen == 5 && memcmp(key, "query", 5) == 0) return set_query(L, req), 0;
    if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 1);
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static int req_tostring(lua_State *L)
{
    edge_lua_req *ud = luaL_checkudata(L, 1, REQ_MT);
    if (ud->req == NULL) lua_pushliteral(L, "edge.request (finished)");
    else lua_pushfstring(L, "edge.request (%s)", edge_request_id(ud->req));
    return 1;
}

void edge_lua_req_register(lua_State *L)
{
    static const luaL_Reg meta[] = {
        {"__index", req_index},
        {"__newindex", req_newindex},
        {"__tostring", req_tostring},
        {NULL, NULL}
    };
    luaL_newmetatable(L, REQ_MT);
    luaL_setfuncs(L, meta, 0);
    lua_pop(L, 1);
}

edge_lua_req *edge_lua_req_push(lua_State *L, edge_request *req)
{
    edge_lua_req *ud = lua_newuserdatauv(L, sizeof(*ud), 1);
    ud->req = req;
    luaL_setmetatable(L, REQ_MT);
    return ud;
}

int edge_lua_req_is(lua_State *L, int idx, const edge_request *req)
{
    edge_lua_req *ud = luaL_testudata(L, idx, REQ_MT);
    return ud != NULL && ud->req == req;
}
