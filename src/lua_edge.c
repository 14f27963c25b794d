/* The `edge` Lua module: edge.sleep, edge.now, edge.log and constants.
 * Names follow OpenResty's ngx.* (ngx.sleep, ngx.now, ngx.log, ngx.ERR). */
#include "lua_edge.h"
#include "common.h"
#include "log.h"

#include <lauxlib.h>
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

static const luaL_Reg edge_funcs[] = {
    {"sleep", l_sleep},
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
}
