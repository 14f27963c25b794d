/* respond's return value -> edge_response, validated field by field. */
#include "lua_response.h"
#include "lua_body_stream.h"
#include "body_pipe.h"
#include "common.h"
#include "request.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SHAPE "{ status = integer, headers = table, body = string }"

static int is_token(const char *s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!edge_http_is_tchar((unsigned char)s[i])) return 0;
    return 1;
}

/* Header values may not carry CR, LF or NUL: that would split the response. */
static int is_safe_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
    return 1;
}

static int is_core_header(const char *name, size_t n)
{
    return (n == 14 && strncasecmp(name, "content-length", n) == 0) ||
           (n == 17 && strncasecmp(name, "transfer-encoding", n) == 0) ||
           (n == 10 && strncasecmp(name, "connection", n) == 0);
}

/* Reads t[name] without metamethods, so a hostile table cannot raise here. */
static int rawfield(lua_State *L, int idx, const char *name)
{
    lua_pushstring(L, name);
    return lua_rawget(L, idx);
}

static int add_value(lua_State *L, int vidx, const char *name, size_t nlen, edge_response *resp,
                     char *err, size_t errlen)
{
    int t = lua_type(L, vidx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        snprintf(err, errlen, "header '%s' must be a string or a list of strings, got %s", name,
                 lua_typename(L, t));
        return EDGE_ERROR;
    }
    size_t vlen;
    const char *v = lua_tolstring(L, vidx, &vlen);   /* a number converts in place: fine here */
    if (!is_safe_value(v, vlen)) {
        snprintf(err, errlen, "header '%s' contains CR, LF or NUL", name);
        return EDGE_ERROR;
    }
    char lower[256];
    for (size_t i = 0; i < nlen; i++) lower[i] = (char)tolower((unsigned char)name[i]);
    edge_response_add_header(resp, lower, nlen, v, vlen);
    return EDGE_OK;
}

static int read_header(lua_State *L, edge_response *resp, char *err, size_t errlen)
{
    /* stack: ... key value */
    if (lua_type(L, -2) != LUA_TSTRING) {
        snprintf(err, errlen, "header names must be strings, got %s", luaL_typename(L, -2));
        return EDGE_ERROR;
    }
    size_t nlen;
    const char *name = lua_tolstring(L, -2, &nlen);
    if (!is_token(name, nlen) || nlen > 255) {
        snprintf(err, errlen, "invalid header name '%.64s'", name);
        return EDGE_ERROR;
    }
    if (is_core_header(name, nlen)) return EDGE_OK;
    if (lua_type(L, -1) != LUA_TTABLE) return add_value(L, lua_gettop(L), name, nlen, resp, err, errlen);

    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);   /* a list: one header line per value */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        int rc = add_value(L, lua_gettop(L), name, nlen, resp, err, errlen);
        lua_pop(L, 1);
        if (rc != EDGE_OK) return rc;
    }
    return EDGE_OK;
}

static int read_headers(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    int t = rawfield(L, idx, "headers");
    int rc = EDGE_OK;
    if (t == LUA_TTABLE) {
        int tbl = lua_gettop(L);
        lua_pushnil(L);
        while (rc == EDGE_OK && lua_next(L, tbl)) {
            rc = read_header(L, resp, err, errlen);
            lua_pop(L, 1);
        }
        if (rc != EDGE_OK) lua_pop(L, 1);   /* the key lua_next left */
    } else if (t != LUA_TNIL) {
        snprintf(err, errlen, "headers must be a table, got %s", lua_typename(L, t));
        rc = EDGE_ERROR;
    }
    lua_pop(L, 1);
    return rc;
}

static int read_status(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    int t = rawfield(L, idx, "status");
    int isint = 0;
    lua_Integer status = t == LUA_TNIL ? 200 : lua_tointegerx(L, -1, &isint);
    if (t == LUA_TNIL) isint = 1;
    lua_pop(L, 1);
    if (t != LUA_TNIL && t != LUA_TNUMBER) isint = 0;
    /* 101: only edge.proxy's WebSocket answer (checked with the body). */
    if (!isint || (status != 101 && (status < 200 || status > 599))) {
        snprintf(err, errlen, "status must be an integer from 200 to 599");
        return EDGE_ERROR;
    }
    resp->status = (int)status;
    return EDGE_OK;
}

static int read_body(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    int t = rawfield(L, idx, "body");
    int rc = EDGE_OK;
    if (t == LUA_TSTRING) {
        size_t n;
        const char *p = lua_tolstring(L, -1, &n);
        edge_buf_append(&resp->body, p, n);
    } else if (edge_lua_is_body_stream(L, -1)) {
        resp->pipe = edge_lua_body_stream_take(L, -1);
        if (resp->pipe) resp->fetched_as_get = resp->pipe->get_for_head;
        if (resp->pipe == NULL) {
            snprintf(err, errlen, "body is a stream that another response took already");
            rc = EDGE_ERROR;
        }
    } else if (t != LUA_TNIL) {
        snprintf(err, errlen, "body must be a string or edge.proxy's stream, got %s", lua_typename(L, t));
        rc = EDGE_ERROR;
    }
    lua_pop(L, 1);
    return rc;
}

/* A number of seconds field (ttl, grace, keep): *has is set when it is > 0
 * (0: per Cache-Control, or the default). */
static int read_seconds(lua_State *L, int idx, const char *name, double *out, int *has, char *err,
                        size_t errlen)
{
    int t = rawfield(L, idx, name);
    if (t == LUA_TNUMBER) {
        *out = lua_tonumber(L, -1);
        *has = *out > 0;
    }
    lua_pop(L, 1);
    if (t == LUA_TNIL || t == LUA_TNUMBER) return EDGE_OK;
    snprintf(err, errlen, "%s must be a number of seconds, got %s", name, lua_typename(L, t));
    return EDGE_ERROR;
}

/* ttl: fresh; grace: then served stale while one refresh runs; keep: then
 * served stale when the origin fails (cache.h's three lifetimes). */
static int read_lifetimes(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    int has_ttl = 0, has_grace = 0, has_keep = 0;
    int rc = EDGE_OK;
    if (read_seconds(L, idx, "ttl", &resp->ttl, &has_ttl, err, errlen) != EDGE_OK ||
        read_seconds(L, idx, "grace", &resp->grace, &has_grace, err, errlen) != EDGE_OK ||
        read_seconds(L, idx, "keep", &resp->keep, &has_keep, err, errlen) != EDGE_OK)
        rc = EDGE_ERROR;
    resp->has_ttl = has_ttl;
    resp->has_grace = has_grace;
    resp->has_keep = has_keep;
    return rc;
}

/* cache = true (or nil): the cache's rules; false: never stored;
 * "any-status": stored whatever the status; "force": also despite
 * Set-Cookie, Authorization and Vary (the script's key selects it). */
static int read_cache(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    int t = rawfield(L, idx, "cache");
    const char *mode = t == LUA_TSTRING ? lua_tostring(L, -1) : "";
    int rc = EDGE_OK;
    resp->cache_mode = EDGE_CACHE_DEFAULT;
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) resp->cache_mode = EDGE_CACHE_OFF;
    else if (strcmp(mode, "force") == 0) resp->cache_mode = EDGE_CACHE_FORCE;
    else if (strcmp(mode, "any-status") == 0) resp->cache_mode = EDGE_CACHE_ANY_STATUS;
    else if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
        snprintf(err, errlen, "cache must be true, false, \"any-status\" or \"force\", got %s",
                 t == LUA_TSTRING ? "another string" : lua_typename(L, t));
        rc = EDGE_ERROR;
    }
    lua_pop(L, 1);
    return rc;
}

/* compress = false: never compressed, from the cache either (the entry keeps
 * the flag); true or nil: the compression rules. */
static int read_compress(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    int t = rawfield(L, idx, "compress");
    int off = t == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
        snprintf(err, errlen, "compress must be a boolean, got %s", lua_typename(L, t));
        return EDGE_ERROR;
    }
    resp->no_compress = off;
    return EDGE_OK;
}

int edge_lua_to_response(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(err, errlen, "expected a table %s, got %s", SHAPE, luaL_typename(L, idx));
        return EDGE_ERROR;
    }
    if (read_status(L, idx, resp, err, errlen) != EDGE_OK ||
        read_headers(L, idx, resp, err, errlen) != EDGE_OK ||
        read_body(L, idx, resp, err, errlen) != EDGE_OK ||
        read_lifetimes(L, idx, resp, err, errlen) != EDGE_OK ||
        read_cache(L, idx, resp, err, errlen) != EDGE_OK ||
        read_compress(L, idx, resp, err, errlen) != EDGE_OK)
        return EDGE_ERROR;
    if (resp->status == 101 && !(resp->pipe && resp->pipe->upgrade)) {
        snprintf(err, errlen, "status must be an integer from 200 to 599 (101: only edge.proxy's "
                 "WebSocket answer, with its body)");
        return EDGE_ERROR;
    }
    return EDGE_OK;
}
