/* edge.shared (lua_shared.h): Lua's view of the shared dictionaries.
 *
 * Nothing here calls into Lua while a dictionary's lock is held: a Lua call
 * may raise (out of memory) and jump out with the lock taken. So values and
 * keys are copied out into C memory first and pushed after the C call
 * returned. Return values follow OpenResty's lua-resty-core shdict: bad keys
 * and values give nil plus a message, bad exptime/init arguments raise. */
#include "lua_shared.h"
#include "size.h"
#include "common.h"
#include "shared_dict.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DICT_MT "edge.shared.dict"
#define DEFAULT_MAX_KEYS 1024    /* get_keys() without max, as OpenResty */
#define GET_RETRIES 8            /* a string that grows between two reads */

static double now(lua_State *L)
{
    const edge_lua_runtime *rt = lua_touserdata(L, lua_upvalueindex(1));
    return rt->now(rt->ud);
}

static edge_shdict *check_dict(lua_State *L)
{
    return *(edge_shdict **)luaL_checkudata(L, 1, DICT_MT);
}

/* The key at index 2. Returns 0, or pushes nil and OpenResty's message and
 * returns 2 (the caller returns that). Numbers are keys as their string. */
static int key_arg(lua_State *L, const char **key, size_t *len)
{
    int t = lua_type(L, 2);
    if (t == LUA_TNIL || t == LUA_TNONE) {
        lua_pushnil(L);
        lua_pushliteral(L, "nil key");
        return 2;
    }
    if (t != LUA_TSTRING && t != LUA_TNUMBER) luaL_typeerror(L, 2, "string");
    *key = lua_tolstring(L, 2, len);
    if (*len == 0 || *len > EDGE_SHDICT_MAX_KEY) {
        lua_pushnil(L);
        lua_pushstring(L, *len == 0 ? "empty key" : "key too long");
        return 2;
    }
    return 0;
}

/* An optional exptime/ttl at idx: nil or none is 0 (no expiry). */
static double ttl_arg(lua_State *L, int idx, const char *what)
{
    if (lua_isnoneornil(L, idx)) return 0;
    double t = luaL_checknumber(L, idx);
    if (!(t >= 0)) luaL_error(L, "bad \"%s\" argument: seconds >= 0 expected", what);
    return t;
}

/* The value at index 3; returns 0, or pushes nil, "bad value type" and returns 2. */
static int value_arg(lua_State *L, edge_shdict_value *v)
{
    memset(v, 0, sizeof(*v));
    switch (lua_type(L, 3)) {
    case LUA_TNIL: case LUA_TNONE: v->type = EDGE_SHDICT_NIL; return 0;
    case LUA_TBOOLEAN: v->type = EDGE_SHDICT_BOOLEAN; v->number = lua_toboolean(L, 3); return 0;
    case LUA_TNUMBER: v->type = EDGE_SHDICT_NUMBER; v->number = lua_tonumber(L, 3); return 0;
    case LUA_TSTRING: v->type = EDGE_SHDICT_STRING; v->str = lua_tolstring(L, 3, &v->len); return 0;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
}

/* Whole numbers come back as integers, so a counter prints as 3, not 3.0. */
static void push_number(lua_State *L, double x)
{
    if (x == floor(x) && fabs(x) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)x);
    else lua_pushnumber(L, x);
}

static void push_value(lua_State *L, const edge_shdict_value *v)
{
    switch (v->type) {
    case EDGE_SHDICT_BOOLEAN: lua_pushboolean(L, v->number != 0); break;
    case EDGE_SHDICT_NUMBER: push_number(L, v->number); break;
    case EDGE_SHDICT_STRING: lua_pushlstring(L, v->str, v->len); break;
    default: lua_pushnil(L);
    }
}

/* ---- reads ---- */

/* Pushes the value of key (stale: expired ones too, *is_stale saying so);
 * returns 0 when there is none. Small strings go through a stack buffer;
 * a larger one is read again into a Lua buffer of its size. */
static int read_value(lua_State *L, edge_shdict *d, const char *key, size_t klen, int stale, int *is_stale)
{
    char small[512];
    edge_shdict_value v;
    size_t needed;
    double t = now(L);
    if (!edge_shdict_get(d, key, klen, t, stale, &v, small, sizeof(small), &needed, is_stale)) return 0;
    if (v.type != EDGE_SHDICT_STRING || needed <= sizeof(small)) {
        push_value(L, &v);
        return 1;
    }
    for (int i = 0; i < GET_RETRIES; i++) {
        size_t cap = needed;
        luaL_Buffer b;
        char *p = luaL_buffinitsize(L, &b, cap);
        if (!edge_shdict_get(d, key, klen, t, stale, &v, p, cap, &needed, is_stale)) {
            luaL_pushresultsize(&b, 0);
            lua_pop(L, 1);
            return 0;
        }
        if (v.type == EDGE_SHDICT_STRING && needed <= cap) {
            luaL_pushresultsize(&b, v.len);
            return 1;
        }
        luaL_pushresultsize(&b, 0);
        lua_pop(L, 1);
        if (v.type != EDGE_SHDICT_STRING) {   /* it became a number or boolean meanwhile */
            push_value(L, &v);
            return 1;
        }
    }
    return luaL_error(L, "shared dict '%s': the value of the key keeps changing size", edge_shdict_name(d));
}

/* dict:get(key) -> value, or nil (absent or expired). */
static int l_get(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    const char *key;
    size_t klen;
    int n = key_arg(L, &key, &klen);
    if (n) return n;
    if (!read_value(L, d, key, klen, 0, NULL)) lua_pushnil(L);
    return 1;
}

/* dict:get_stale(key) -> value, nil (flags), stale; or nil. */
static int l_get_stale(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    const char *key;
    size_t klen;
    int n = key_arg(L, &key, &klen), is_stale = 0;
    if (n) return n;
    if (!read_value(L, d, key, klen, 1, &is_stale)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushnil(L);
    lua_pushboolean(L, is_stale);
    return 3;
}

/* ---- writes ---- */

/* OpenResty's message for a failed write. */
static const char *why(int rc)
{
    switch (rc) {
    case EDGE_SHDICT_EXISTS: return "exists";
    case EDGE_SHDICT_NOT_FOUND: return "not found";
    case EDGE_SHDICT_NOT_NUMBER: return "not a number";
    default: return "no memory";
    }
}

/* Pushes a write's result: true, nil, forcible; or false, why, forcible. */
static int push_write_result(lua_State *L, int rc, int forcible)
{
    lua_pushboolean(L, rc == EDGE_SHDICT_OK);
    if (rc == EDGE_SHDICT_OK) lua_pushnil(L);
    else lua_pushstring(L, why(rc));
    lua_pushboolean(L, forcible);
    return 3;
}

/* set, safe_set, add, safe_add, replace: (key, value, exptime). */
static int write_op(lua_State *L, unsigned flags)
{
    edge_shdict *d = check_dict(L);
    const char *key;
    size_t klen;
    edge_shdict_value v;
    int n = key_arg(L, &key, &klen);
    if (n || (n = value_arg(L, &v))) return n;
    double ttl = ttl_arg(L, 4, "exptime");
    if (!lua_isnoneornil(L, 5)) return luaL_error(L, "edge.shared: user flags are not supported");
    if (v.type == EDGE_SHDICT_NIL && (flags & (EDGE_SHDICT_SET_ADD | EDGE_SHDICT_SET_REPLACE))) {
        lua_pushnil(L);
        lua_pushliteral(L, "attempt to add or replace nil values");
        return 2;
    }
    int forcible = 0;
    int rc = edge_shdict_set(d, key, klen, &v, ttl, flags, now(L), &forcible);
    return push_write_result(L, rc, forcible);
}

static int l_set(lua_State *L) { return write_op(L, 0); }
static int l_safe_set(lua_State *L) { return write_op(L, EDGE_SHDICT_SET_SAFE); }
static int l_add(lua_State *L) { return write_op(L, EDGE_SHDICT_SET_ADD); }
static int l_safe_add(lua_State *L) { return write_op(L, EDGE_SHDICT_SET_ADD | EDGE_SHDICT_SET_SAFE); }
static int l_replace(lua_State *L) { return write_op(L, EDGE_SHDICT_SET_REPLACE); }

/* dict:incr(key, delta, init?, init_ttl?) -> newval, nil, forcible; or nil, why. */
static int l_incr(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    const char *key;
    size_t klen;
    int n = key_arg(L, &key, &klen);
    if (n) return n;
    double delta = luaL_checknumber(L, 3);
    int has_init = !lua_isnoneornil(L, 4);
    double init = has_init ? luaL_checknumber(L, 4) : 0;
    if (!has_init && !lua_isnoneornil(L, 5)) return luaL_error(L, "must provide \"init\" when providing \"init_ttl\"");
    double init_ttl = ttl_arg(L, 5, "init_ttl");
    double result = 0;
    int forcible = 0;
    int rc = edge_shdict_incr(d, key, klen, delta, has_init, init, init_ttl, now(L), &result, &forcible);
    if (rc != EDGE_SHDICT_OK) {     /* nil, not false, as OpenResty's incr */
        lua_pushnil(L);
        lua_pushstring(L, why(rc));
        lua_pushboolean(L, forcible);
        return 3;
    }
    push_number(L, result);
    lua_pushnil(L);
    lua_pushboolean(L, forcible);
    return 3;
}

/* dict:delete(key) -> true (OpenResty's delete is set(key, nil)). */
static int l_delete(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    const char *key;
    size_t klen;
    int n = key_arg(L, &key, &klen);
    if (n) return n;
    edge_shdict_delete(d, key, klen);
    lua_pushboolean(L, 1);
    return 1;
}

static int push_not_found(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "not found");
    return 2;
}

/* dict:ttl(key) -> seconds left (0: no expiry), or nil, "not found". */
static int l_ttl(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    const char *key;
    size_t klen;
    int n = key_arg(L, &key, &klen);
    if (n) return n;
    double left;
    if (!edge_shdict_ttl(d, key, klen, now(L), &left)) return push_not_found(L);
    push_number(L, left);
    return 1;
}

/* dict:expire(key, exptime) -> true, or nil, "not found". 0: no expiry. */
static int l_expire(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    const char *key;
    size_t klen;
    int n = key_arg(L, &key, &klen);
    if (n) return n;
    luaL_checknumber(L, 3);
    double ttl = ttl_arg(L, 3, "exptime");
    if (!edge_shdict_expire(d, key, klen, ttl, now(L))) return push_not_found(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_flush_all(lua_State *L)
{
    edge_shdict_flush_all(check_dict(L));
    return 0;
}

/* dict:flush_expired(max?) -> how many were freed (max 0 or none: all). */
static int l_flush_expired(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    lua_Integer max = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, max >= 0, 2, "max_count must be >= 0");
    lua_pushinteger(L, (lua_Integer)edge_shdict_flush_expired(d, now(L), (size_t)max));
    return 1;
}

/* ---- get_keys: copied out under the lock into C memory, pushed after ---- */

typedef struct key_list {
    char   *bytes;      /* the keys, back to back */
    size_t *lens;
    size_t  n, used, cap_bytes, cap_keys;
} key_list;

static void collect_key(void *ud, const char *key, size_t klen)
{
    key_list *k = ud;
    if (k->used + klen > k->cap_bytes) {
        k->cap_bytes = (k->used + klen) * 2;
        k->bytes = edge_realloc(k->bytes, k->cap_bytes);
    }
    if (k->n == k->cap_keys) {
        k->cap_keys = k->cap_keys ? k->cap_keys * 2 : 64;
        k->lens = edge_realloc(k->lens, k->cap_keys * sizeof(*k->lens));
    }
    memcpy(k->bytes + k->used, key, klen);
    k->used += klen;
    k->lens[k->n++] = klen;
}

static int push_keys(lua_State *L)
{
    key_list *k = lua_touserdata(L, 1);
    lua_createtable(L, (int)k->n, 0);
    size_t off = 0;
    for (size_t i = 0; i < k->n; i++) {
        lua_pushlstring(L, k->bytes + off, k->lens[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        off += k->lens[i];
    }
    return 1;
}

/* dict:get_keys(max?) -> a list of live keys; at most 1024 unless max says
 * (0: all). The list is pushed under lua_pcall so the C copy is freed even
 * when Lua runs out of memory. */
static int l_get_keys(lua_State *L)
{
    edge_shdict *d = check_dict(L);
    lua_Integer max = luaL_optinteger(L, 2, DEFAULT_MAX_KEYS);
    luaL_argcheck(L, max >= 0, 2, "max_count must be >= 0");
    key_list k = {0};
    edge_shdict_keys(d, now(L), (size_t)max, collect_key, &k);
    lua_pushcfunction(L, push_keys);
    lua_pushlightuserdata(L, &k);
    int rc = lua_pcall(L, 1, 1, 0);
    free(k.bytes);
    free(k.lens);
    if (rc != LUA_OK) return lua_error(L);
    return 1;
}

/* dict:capacity() and dict:free_space(), in bytes, as OpenResty's. */
static int l_capacity(lua_State *L)
{
    edge_shdict_stats st;
    edge_shdict_get_stats(check_dict(L), &st);
    lua_pushinteger(L, (lua_Integer)st.capacity);
    return 1;
}

static int l_free_space(lua_State *L)
{
    edge_shdict_stats st;
    edge_shdict_get_stats(check_dict(L), &st);
    lua_pushinteger(L, (lua_Integer)(st.capacity - st.bytes));
    return 1;
}

static int l_tostring(lua_State *L)
{
    lua_pushfstring(L, "edge.shared.dict: %s", edge_shdict_name(check_dict(L)));
    return 1;
}

static const luaL_Reg dict_methods[] = {
    {"get", l_get}, {"get_stale", l_get_stale}, {"set", l_set}, {"safe_set", l_safe_set},
    {"add", l_add}, {"safe_add", l_safe_add}, {"replace", l_replace}, {"incr", l_incr},
    {"delete", l_delete}, {"ttl", l_ttl}, {"expire", l_expire}, {"flush_all", l_flush_all},
    {"flush_expired", l_flush_expired}, {"get_keys", l_get_keys}, {"capacity", l_capacity},
    {"free_space", l_free_space}, {NULL, NULL}
};

/* ---- edge.shared ---- */

/* Pushes the VM's userdata for d, made once per VM and kept in the cache
 * table (upvalue 2) so a hot path indexes edge.shared.NAME without allocating. */
static void push_dict(lua_State *L, edge_shdict *d)
{
    const char *name = edge_shdict_name(d);
    if (lua_getfield(L, lua_upvalueindex(2), name) != LUA_TNIL) return;
    lua_pop(L, 1);
    edge_shdict **p = lua_newuserdatauv(L, sizeof(*p), 0);
    *p = d;
    luaL_setmetatable(L, DICT_MT);
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(2), name);
}

/* edge.shared.define(name, size) -> the dict; raises on a bad name or size,
 * or a size other than the one the dict already has. */
static int l_define(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t size = 0;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n > 0, 2, "size must be > 0");
        size = (size_t)n;
    } else if (edge_parse_size(luaL_checkstring(L, 2), &size) != EDGE_OK) {
        return luaL_error(L, "edge.shared.define: bad size '%s' for '%s': expected bytes or a k, m or g suffix "
                          "(\"10m\")", lua_tostring(L, 2), name);
    }
    char err[256];
    edge_shdict *d = edge_shdict_define(name, size, err, sizeof(err));
    if (d == NULL) return luaL_error(L, "edge.shared.define: %s", err);
    push_dict(L, d);
    return 1;
}

/* edge.shared[name] -> the dict, or nil when none has that name. */
static int shared_index(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING) return 0;
    size_t len;
    const char *name = lua_tolstring(L, 2, &len);
    edge_shdict *d = edge_shdict_find(name, len);
    if (d == NULL) return 0;
    push_dict(L, d);
    return 1;
}

static int shared_newindex(lua_State *L)
{
    return luaL_error(L, "edge.shared is read-only: make a dict with edge.shared.define(name, size)");
}

static void push_upvalues(lua_State *L, const edge_lua_runtime *rt, int cache)
{
    lua_pushlightuserdata(L, (void *)rt);
    lua_pushvalue(L, cache);
}

void edge_lua_shared_open(lua_State *L, const edge_lua_runtime *rt)
{
    luaL_newmetatable(L, DICT_MT);      /* per VM; the methods get this rt */
    lua_createtable(L, 0, (int)EDGE_ARRAY_LEN(dict_methods));
    lua_pushlightuserdata(L, (void *)rt);
    luaL_setfuncs(L, dict_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    lua_newtable(L);                    /* the cache of userdata, by name */
    int cache = lua_gettop(L);
    lua_createtable(L, 0, 1);           /* edge.shared */
    push_upvalues(L, rt, cache);
    lua_pushcclosure(L, l_define, 2);
    lua_setfield(L, -2, "define");
    lua_createtable(L, 0, 2);
    push_upvalues(L, rt, cache);
    lua_pushcclosure(L, shared_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, shared_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
    lua_remove(L, cache);
}
