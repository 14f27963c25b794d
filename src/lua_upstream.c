/* edge.upstream: the module table (define, get, names), the upstream
 * userdata, and the C side's access to a VM's upstreams. The options
 * themselves are checked in lua_upstream_opts.c. */
#include "lua_upstream.h"
#include "common.h"
#include "log.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UPSTREAMS_KEY "edge.upstreams"          /* registry: name -> upstream userdata */
#define SEALED_KEY    "edge.upstreams.sealed"   /* registry: true once the script loaded */
#define UPSTREAM_MT   "edge.upstream"

enum { NAME_MAX_LEN = 64 };

static const char NAME_CHARS[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";

/* ---- the upstream userdata ---- */

static int upstream_gc(lua_State *L)
{
    edge_upstream *u = luaL_checkudata(L, 1, UPSTREAM_MT);
    edge_balancer_free(u->balancer);
    u->balancer = NULL;
    edge_upstream_def_free(&u->def);
    if (u->hash_key_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, u->hash_key_ref);
    u->hash_key_ref = LUA_NOREF;
    return 0;
}

/* Pushes the registry's name -> upstream table. */
static void push_upstreams(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, UPSTREAMS_KEY) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, UPSTREAMS_KEY);
}

/* A name as metrics labels and fetch targets can carry it. */
static int valid_name(const char *s, size_t n)
{
    return n > 0 && n <= NAME_MAX_LEN && strspn(s, NAME_CHARS) == n;
}

/* edge.upstream.define(name, opts) */
static int l_define(lua_State *L)
{
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, valid_name(name, n), 1, "an upstream name is 1 to 64 letters, digits, '.', '-' or '_'");
    if (lua_getfield(L, LUA_REGISTRYINDEX, SEALED_KEY) == LUA_TBOOLEAN && lua_toboolean(L, -1))
        return luaL_error(L, "edge.upstream.define('%s'): must be called at the script's top level, "
                          "while it loads (not from a hook)", name);
    lua_pop(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    push_upstreams(L);                                  /* 3 */
    if (lua_getfield(L, 3, name) != LUA_TNIL) {
        edge_upstream *old = lua_touserdata(L, -1);
        return luaL_error(L, "edge.upstream.define('%s'): an upstream named '%s' is already defined%s%s",
                          name, name, old ? " at " : "", old ? old->where : "");
    }
    lua_pop(L, 1);

    edge_upstream *u = lua_newuserdatauv(L, sizeof(*u), 0);   /* 4 */
    memset(u, 0, sizeof(*u));
    u->hash_key_ref = LUA_NOREF;
    edge_upstream_def_init(&u->def);
    luaL_setmetatable(L, UPSTREAM_MT);                /* from here __gc frees what parsing made */
    luaL_where(L, 1);
    snprintf(u->where, sizeof(u->where), "%s", lua_tostring(L, -1));
    size_t wl = strlen(u->where);
    while (wl > 0 && (u->where[wl - 1] == ' ' || u->where[wl - 1] == ':')) u->where[--wl] = '\0';
    lua_pop(L, 1);
    u->def.name = edge_strdup(name);
    edge_lua_upstream_parse(L, u, name, 2);
    u->balancer = edge_balancer_new(&u->def);
    if (u->balancer == NULL) return luaL_error(L, "edge.upstream.define('%s'): cannot balance these servers", name);
    if (u->def.tls.enabled && !u->def.tls.verify)
        edge_log(EDGE_LOG_WARN, 0, "%s: edge.upstream.define('%s'): tls.verify = false: the servers' "
                 "certificates are not checked", u->where, name);
    lua_setfield(L, 3, name);
    return 0;
}

/* ---- get: the definition back as options ---- */

static void set_number(lua_State *L, const char *k, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_string(lua_State *L, const char *k, const char *v)
{
    if (v == NULL) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static void push_servers(lua_State *L, const edge_upstream_def *def)
{
    lua_createtable(L, (int)def->n_servers, 0);
    for (size_t i = 0; i < def->n_servers; i++) {
        const edge_upstream_server *s = &def->servers[i];
        lua_createtable(L, 1, 2);
        if (strchr(s->host, ':')) lua_pushfstring(L, "[%s]:%d", s->host, (int)s->port);
        else lua_pushfstring(L, "%s:%d", s->host, (int)s->port);
        lua_rawseti(L, -2, 1);
        set_number(L, "weight", s->weight);
        set_bool(L, "backup", s->backup);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "servers");
}

static void push_retries(lua_State *L, const edge_upstream_def *def)
{
    lua_createtable(L, 0, 2);
    set_number(L, "tries", def->retries.tries);
    lua_newtable(L);
    lua_Integer n = 0;
    for (unsigned k = 0; k < 32; k++) {
        const char *name = (def->retries.on >> k) & 1 ? edge_upstream_failure_name(1u << k) : NULL;
        if (name == NULL) continue;
        lua_pushstring(L, name);
        lua_rawseti(L, -2, ++n);
    }
    lua_setfield(L, -2, "on");
    lua_setfield(L, -2, "retries");
}

static void push_health(lua_State *L, const edge_upstream_def *def)
{
    lua_createtable(L, 0, 2);
    lua_createtable(L, 0, 2);
    set_number(L, "max_fails", def->passive.max_fails);
    set_number(L, "fail_timeout", def->passive.fail_timeout);
    lua_setfield(L, -2, "passive");
    if (def->active.enabled) {
        lua_createtable(L, 0, 5);
        set_string(L, "path", def->active.path);
        set_number(L, "interval", def->active.interval);
        set_number(L, "rise", def->active.rise);
        set_number(L, "fall", def->active.fall);
        set_number(L, "timeout", def->active.timeout);
    } else {
        lua_pushboolean(L, 0);
    }
    lua_setfield(L, -2, "active");
    lua_setfield(L, -2, "health");
}

static void push_tls(lua_State *L, const edge_upstream_def *def)
{
    if (def->tls.enabled) {
        lua_createtable(L, 0, 3);
        set_bool(L, "verify", def->tls.verify);
        set_string(L, "sni", def->tls.sni);
        set_string(L, "ca_file", def->tls.ca_file);
    } else {
        lua_pushboolean(L, 0);
    }
    lua_setfield(L, -2, "tls");
}

/* A fresh table in define's own shape: define(other, get(name)) defines the same. */
static void push_options(lua_State *L, const edge_upstream *u)
{
    const edge_upstream_def *def = &u->def;
    lua_createtable(L, 0, 9);
    push_servers(L, def);
    lua_pushstring(L, edge_upstream_balance_name(def->balance));
    lua_setfield(L, -2, "balance");
    if (u->hash_key_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, u->hash_key_ref);
        lua_setfield(L, -2, "hash_key");
    }
    lua_createtable(L, 0, 3);
    set_number(L, "size", def->keepalive.size);
    set_number(L, "idle_timeout", def->keepalive.idle_timeout);
    set_number(L, "max_requests", def->keepalive.max_requests);
    lua_setfield(L, -2, "keepalive");
    lua_createtable(L, 0, 3);
    set_number(L, "connect", def->timeout.connect);
    set_number(L, "send", def->timeout.send);
    set_number(L, "read", def->timeout.read);
    lua_setfield(L, -2, "timeout");
    push_retries(L, def);
    push_health(L, def);
    push_tls(L, def);
    lua_createtable(L, 0, 1);
    if (def->dns_valid > 0) set_number(L, "valid", def->dns_valid);
    lua_setfield(L, -2, "dns");
}

/* edge.upstream.get(name) -> options, or nil */
static int l_get(lua_State *L)
{
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    edge_upstream *u = edge_lua_upstream_find(L, name, n);
    if (u == NULL) return lua_pushnil(L), 1;
    push_options(L, u);
    return 1;
}

typedef struct named {
    const char *s;
    lua_Integer at;
} named;

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const named *)a)->s, ((const named *)b)->s);
}

/* Pushes a sorted copy of the list of n strings at idx. Nothing raises
 * between the malloc and the free: the copy is presized, and its values are
 * the list's own strings. */
static void push_sorted(lua_State *L, int idx, size_t n)
{
    lua_createtable(L, (int)n, 0);
    named *v = edge_malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        v[i] = (named){.s = lua_tostring(L, -1), .at = (lua_Integer)i + 1};
        lua_pop(L, 1);
    }
    qsort(v, n, sizeof(*v), cmp_name);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, v[i].at);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(v);
}

/* edge.upstream.names() -> { name, ... } sorted */
static int l_names(lua_State *L)
{
    push_upstreams(L);
    int t = lua_gettop(L);
    lua_newtable(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, t + 1, (lua_Integer)++n);
    }
    push_sorted(L, t + 1, n);
    return 1;
}

#ifdef EDGE_LUA_MODULE
/* edge.upstream.reset(): forgets every definition. Only in `require "edge"`
 * outside the server, so unit specs can load a script more than once. */
static int l_reset(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, UPSTREAMS_KEY);
    return 0;
}
#endif

static const luaL_Reg upstream_funcs[] = {
    {"define", l_define},
    {"get", l_get},
    {"names", l_names},
#ifdef EDGE_LUA_MODULE
    {"reset", l_reset},
#endif
    {NULL, NULL}
};

void edge_lua_upstream_open(lua_State *L)
{
    if (luaL_newmetatable(L, UPSTREAM_MT)) {
        lua_pushcfunction(L, upstream_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "edge.upstream");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, UPSTREAMS_KEY);
    lua_pushboolean(L, 0);          /* the slot exists: sealing allocates nothing */
    lua_setfield(L, LUA_REGISTRYINDEX, SEALED_KEY);
    luaL_newlib(L, upstream_funcs);
}

void edge_lua_upstream_seal(lua_State *L)
{
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, SEALED_KEY);
}

edge_upstream *edge_lua_upstream_find(lua_State *L, const char *name, size_t len)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, UPSTREAMS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    edge_upstream *u = luaL_testudata(L, -1, UPSTREAM_MT);
    lua_pop(L, 2);
    return u;
}

void edge_lua_upstream_each(lua_State *L, void (*fn)(edge_upstream *u, void *ud), void *ud)
{
    push_upstreams(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        edge_upstream *u = luaL_testudata(L, -1, UPSTREAM_MT);
        lua_pop(L, 1);
        if (u) fn(u, ud);
    }
    lua_pop(L, 1);
}
