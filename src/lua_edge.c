/* The `edge` Lua module: edge.sleep, edge.now, edge.log and constants.
 * Names follow OpenResty's ngx.* (ngx.sleep, ngx.now, ngx.log, ngx.ERR). */
#include "lua_edge.h"
#include "cache.h"
#include "lua_limit.h"
#include "lua_req.h"
#include "common.h"
#include "log.h"
#include "lua_response.h"
#include "lua_shared.h"
#include "lua_upstream.h"
#include "request.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const edge_lua_runtime *runtime(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s <= 86400 * 365, 1, "seconds must be >= 0");
    const edge_lua_runtime *rt = runtime(L);
    return rt->sleep(L, s, rt->ud);
}

/* edge.fetch(url [, opts]) -> res, or nil and a message (lua_fetch.c). */
static int l_fetch(lua_State *L)
{
    const edge_lua_runtime *rt = runtime(L);
    if (rt->fetch == NULL)
        return luaL_error(L, "edge.fetch is not available here: only in the server (a respond hook)");
    return rt->fetch(L, rt->ud);
}

/* edge.proxy(req, target [, opts]) -> res (lua_proxy.c). */
static int l_proxy(lua_State *L)
{
    const edge_lua_runtime *rt = runtime(L);
    if (rt->proxy == NULL)
        return luaL_error(L, "edge.proxy is not available here: only in the server (a respond hook)");
    return rt->proxy(L, rt->ud);
}

static int l_now(lua_State *L)
{
    const edge_lua_runtime *rt = runtime(L);
    lua_pushnumber(L, rt->now(rt->ud));
    return 1;
}

/* edge.log(level, ...): the arguments are converted with tostring and joined,
 * like ngx.log; the line says the caller's file:line. */
static int l_log(lua_State *L)
{
    lua_Integer level = luaL_checkinteger(L, 1);
    luaL_argcheck(L, level >= EDGE_LOG_STDERR && level <= EDGE_LOG_DEBUG, 1, "bad log level");
    int n = lua_gettop(L);
    if (level > edge_log_level) return 0;

    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 2; i <= n; i++) {
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);

    luaL_where(L, 1);
    const char *where = lua_tostring(L, -1);
    const edge_lua_runtime *rt = runtime(L);
    rt->log(L, (int)level, where, lua_tostring(L, -2), rt->ud);
    return 0;
}

/* ---- edge.cache: the same C cache the server answers from ---- */

static edge_cache *check_cache(lua_State *L, const edge_lua_runtime *rt)
{
    if (rt->cache == NULL) luaL_error(L, "edge.cache is not available here");
    return rt->cache;
}

static void push_entry(lua_State *L, const edge_cache_entry *e, double now)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, e->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)e->n_headers);
    const edge_header *h = edge_cache_entry_headers(e);
    const char *data = edge_cache_entry_header_data(e);
    int t = lua_gettop(L);
    for (uint32_t i = 0; i < e->n_headers; i++) {      /* a repeated header becomes a list, as respond gave it */
        lua_pushlstring(L, data + h[i].name.off, h[i].name.len);
        lua_pushlstring(L, data + h[i].value.off, h[i].value.len);
        edge_lua_add_repeatable(L, t);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, edge_cache_entry_body(e), e->body_len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, e->expires_at - now);
    lua_setfield(L, -2, "ttl");
    lua_pushnumber(L, now - e->stored_at);
    lua_setfield(L, -2, "age");
}

/* push_entry under lua_pcall (1: the entry, 2: now), so that l_cache_get
 * releases the entry even when building the table runs out of memory. */
static int push_entry_call(lua_State *L)
{
    push_entry(L, lua_touserdata(L, 1), lua_tonumber(L, 2));
    return 1;
}

/* edge.cache.get(key) -> { status, headers, body, ttl, age } or nil */
static int l_cache_get(lua_State *L)
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const edge_lua_runtime *rt = runtime(L);
    double now = rt->now(rt->ud);
    edge_cache_entry *e = edge_cache_get(check_cache(L, rt), key, klen, now);
    if (e && edge_cache_entry_is_marker(e)) {
        /* The key's response varied: its variants are stored under keys
         * only a request can compute. */
        edge_cache_release(e);
        e = NULL;
    }
    if (e == NULL) return lua_pushnil(L), 1;
    lua_pushcfunction(L, push_entry_call);
    lua_pushlightuserdata(L, e);
    lua_pushnumber(L, now);
    int rc = lua_pcall(L, 2, 1, 0);
    edge_cache_release(e);
    if (rc != LUA_OK) return lua_error(L);     /* the same error, now that nothing leaks */
    return 1;
}

typedef struct to_response_call {
    edge_response *resp;
    char *err;
    size_t errlen;
    int rc;
} to_response_call;

/* edge_lua_to_response under lua_pcall (1: a to_response_call, 2: the value). */
static int to_response_call_fn(lua_State *L)
{
    to_response_call *c = lua_touserdata(L, 1);
    c->rc = edge_lua_to_response(L, 2, c->resp, c->err, c->errlen);
    return 0;
}

int edge_lua_to_response_protected(lua_State *L, int idx, edge_response *resp, char *err, size_t errlen)
{
    to_response_call c = {.resp = resp, .err = err, .errlen = errlen, .rc = EDGE_ERROR};
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 3)) {
        snprintf(err, errlen, "not enough memory: the VM reached --lua-memory");
        return EDGE_LUA_RAISED;
    }
    lua_pushcfunction(L, to_response_call_fn);
    lua_pushlightuserdata(L, &c);
    lua_pushvalue(L, idx);
    int rc = lua_pcall(L, 2, 0, 0);
    if (rc == LUA_OK) return c.rc;
    if (rc == LUA_ERRMEM || lua_type(L, -1) != LUA_TSTRING)
        snprintf(err, errlen, "not enough memory: the VM reached --lua-memory");
    else
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return EDGE_LUA_RAISED;
}

/* edge.cache.set(key, response [, ttl]) -> true, or nil and a message. The
 * ttl argument wins over response.ttl, which wins over --cache-ttl;
 * response.grace and response.keep are the entry's grace and keep. Every
 * argument is checked before resp holds memory; a memory error while
 * converting frees it, then raises. */
static int l_cache_set(lua_State *L)
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    luaL_checktype(L, 2, LUA_TTABLE);
    double ttl_arg = luaL_optnumber(L, 3, 0);
    const edge_lua_runtime *rt = runtime(L);
    edge_cache *cache = check_cache(L, rt);

    edge_response resp = {.status = 200};
    char err[256];
    int rc = edge_lua_to_response_protected(L, 2, &resp, err, sizeof(err));
    edge_cache_life life = {ttl_arg > 0 ? ttl_arg : resp.has_ttl ? resp.ttl : rt->cache_ttl,
                            resp.has_grace ? resp.grace : 0, resp.has_keep ? resp.keep : 0};
    if (rc == EDGE_OK && edge_cache_put_life(cache, key, klen, &resp, rt->now(rt->ud), &life) != EDGE_OK) {
        rc = EDGE_ERROR;
        snprintf(err, sizeof(err), "entry too large for the cache, or ttl not > 0");
    }
    edge_buf_free(&resp.data);
    edge_buf_free(&resp.body);
    free(resp.headers);
    if (rc == EDGE_LUA_RAISED) return luaL_error(L, "%s", err);
    if (rc != EDGE_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The options of edge.cache.<fname> at idx: nil, or a table whose only
 * field is soft (a boolean). Returns EDGE_PURGE_SOFT or EDGE_PURGE_HARD;
 * raises an error naming the function and every unknown field (the name is
 * written out: called through pcall, Lua would not know it). */
static int purge_opts(lua_State *L, int idx, const char *fname)
{
    if (lua_isnoneornil(L, idx)) return EDGE_PURGE_HARD;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "soft");
    int t = lua_type(L, -1), soft = lua_toboolean(L, -1) ? EDGE_PURGE_SOFT : EDGE_PURGE_HARD;
    lua_pop(L, 1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        luaL_error(L, "edge.cache.%s: opts.soft must be a boolean, not %s", fname, lua_typename(L, t));
    lua_newtable(L);                       /* the unknown fields, as text */
    int names = lua_gettop(L), unknown = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        size_t n;
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (k && n == 4 && memcmp(k, "soft", 4) == 0) continue;
        luaL_tolstring(L, -1, NULL);       /* a copy: the key itself stays as lua_next left it */
        lua_rawseti(L, names, ++unknown);
    }
    if (unknown) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 1; i <= unknown; i++) {
            luaL_addstring(&b, i > 1 ? ", '" : "'");
            lua_rawgeti(L, names, i);
            luaL_addvalue(&b);
            luaL_addchar(&b, '\'');
        }
        luaL_pushresult(&b);
        luaL_error(L, "edge.cache.%s: unknown option%s %s (known: soft)", fname, unknown > 1 ? "s" : "",
                   lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    return soft;
}

typedef size_t (*purge_fn)(edge_cache *c, const char *s, size_t n, int soft, double now);

/* Runs fn on argument 1 with the options at 2. The purge runs on the
 * calling worker, in the cache's bounded batches: the other workers keep
 * serving, this one waits for the purge. Returns the entries purged. */
static size_t purge_call(lua_State *L, purge_fn fn, const char *fname)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int soft = purge_opts(L, 2, fname);
    const edge_lua_runtime *rt = runtime(L);
    return fn(check_cache(L, rt), s, n, soft, rt->now(rt->ud));
}

/* edge.cache.purge(key [, opts]) -> true when the key, or an entry derived
 * from it (a Vary variant, a compressed copy), was there. */
static int l_cache_purge(lua_State *L)
{
    lua_pushboolean(L, purge_call(L, edge_cache_purge_key, "purge") > 0);
    return 1;
}

/* edge.cache.purge_prefix(prefix [, opts]) -> the entries purged ("" purges all). */
static int l_cache_purge_prefix(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)purge_call(L, edge_cache_purge_prefix, "purge_prefix"));
    return 1;
}

/* edge.cache.purge_tag(tag [, opts]) -> the entries purged. */
static int l_cache_purge_tag(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)purge_call(L, edge_cache_purge_tag, "purge_tag"));
    return 1;
}

/* edge.cache.stats() -> { entries, bytes, max_bytes, hits, misses, evictions, purged } */
static int l_cache_stats(lua_State *L)
{
    edge_cache_stats st;
    edge_cache_get_stats(check_cache(L, runtime(L)), &st);
    lua_createtable(L, 0, 7);
    const struct { const char *name; uint64_t v; } f[] = {
        {"entries", st.entries}, {"bytes", st.bytes}, {"max_bytes", st.max_bytes},
        {"hits", st.hits}, {"misses", st.misses}, {"evictions", st.evictions}, {"purged", st.purged},
    };
    for (size_t i = 0; i < EDGE_ARRAY_LEN(f); i++) {
        lua_pushinteger(L, (lua_Integer)f[i].v);
        lua_setfield(L, -2, f[i].name);
    }
    return 1;
}

static const luaL_Reg cache_funcs[] = {
    {"get", l_cache_get},
    {"set", l_cache_set},
    {"purge", l_cache_purge},
    {"purge_prefix", l_cache_purge_prefix},
    {"purge_tag", l_cache_purge_tag},
    {"stats", l_cache_stats},
    {NULL, NULL}
};

/* edge.parse_args(query) -> table: the same C that fills req.args, for plain
 * request tables in specs. */
static int l_parse_args(lua_State *L)
{
    size_t n;
    const char *q = luaL_optlstring(L, 1, "", &n);
    lua_newtable(L);
    edge_lua_parse_args(L, q, n);
    return 1;
}

/* edge.router, edge.request and edge.response load their Lua modules on
 * first use, so `edge.response.json(...)` works as the docs write it. */
static int module_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k == NULL || (strcmp(k, "router") != 0 && strcmp(k, "request") != 0 && strcmp(k, "response") != 0))
        return 0;
    lua_getglobal(L, "require");
    lua_pushfstring(L, "edge.%s", k);
    lua_call(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

static const luaL_Reg edge_funcs[] = {
    {"sleep", l_sleep},
    {"fetch", l_fetch},
    {"proxy", l_proxy},
    {"parse_args", l_parse_args},
    {"now", l_now},
    {"log", l_log},
    {NULL, NULL}
};

static void set_int(lua_State *L, const char *name, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, name);
}

void edge_lua_push_module(lua_State *L, const edge_lua_runtime *rt)
{
    lua_createtable(L, 0, 16);
    lua_pushlightuserdata(L, (void *)rt);
    luaL_setfuncs(L, edge_funcs, 1);
    set_int(L, "STDERR", EDGE_LOG_STDERR);
    set_int(L, "EMERG", EDGE_LOG_EMERG);
    set_int(L, "ALERT", EDGE_LOG_ALERT);
    set_int(L, "CRIT", EDGE_LOG_CRIT);
    set_int(L, "ERR", EDGE_LOG_ERR);
    set_int(L, "WARN", EDGE_LOG_WARN);
    set_int(L, "NOTICE", EDGE_LOG_NOTICE);
    set_int(L, "INFO", EDGE_LOG_INFO);
    set_int(L, "DEBUG", EDGE_LOG_DEBUG);
    set_int(L, "worker_id", rt->worker_id);
    lua_pushliteral(L, EDGE_VERSION);
    lua_setfield(L, -2, "version");
    lua_createtable(L, 0, 6);
    lua_pushlightuserdata(L, (void *)rt);
    luaL_setfuncs(L, cache_funcs, 1);
    lua_setfield(L, -2, "cache");
    edge_lua_upstream_open(L);
    lua_setfield(L, -2, "upstream");
    edge_lua_shared_open(L, rt);
    lua_setfield(L, -2, "shared");
    edge_lua_limit_open(L, rt);
    lua_setfield(L, -2, "limit");
    if (rt->push_timer) {
        rt->push_timer(L, rt->ud);
        lua_setfield(L, -2, "timer");
    }
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, module_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}
