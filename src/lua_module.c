/* `require "edge"` outside the server (busted unit specs): the same module C,
 * with a runtime where edge.sleep advances a virtual clock instead of waiting,
 * so timing logic in scripts is testable instantly. edge.now() reads that clock,
 * which starts at the real time when the module is loaded. */
#include "cache.h"
#include "lua_edge.h"
#include "log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <sys/time.h>

int luaopen_edge(lua_State *L);

static double virtual_now;

/* edge._virtual_clock: what lua/edge/testing/clock.lua drives. */
static int l_clock_get(lua_State *L)
{
    lua_pushnumber(L, virtual_now);
    return 1;
}

static int l_clock_set(lua_State *L)
{
    virtual_now = luaL_checknumber(L, 1);
    return 0;
}

static int l_clock_advance(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0, 1, "seconds must be >= 0");
    virtual_now += s;
    lua_pushnumber(L, virtual_now);
    return 1;
}

static double module_now(void *ud)
{
    return virtual_now;
}

static int module_sleep(lua_State *L, double seconds, void *ud)
{
    virtual_now += seconds;
    return 0;
}

static void module_log(lua_State *L, int level, const char *where, const char *msg, void *ud)
{
    edge_log_write(level, 0, "[lua] %s%s", where, msg);
}

/* One cache per process, like the server's, with the server's default bound. */
static edge_lua_runtime module_runtime = {
    .now = module_now, .sleep = module_sleep, .log = module_log, .ud = NULL, .worker_id = 0,
    .cache = NULL, .cache_ttl = 60
};

int luaopen_edge(lua_State *L)
{
    if (virtual_now == 0) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        virtual_now = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    }
    if (module_runtime.cache == NULL) module_runtime.cache = edge_cache_new(64u << 20);
    edge_lua_push_module(L, &module_runtime);
    static const luaL_Reg clock_funcs[] = {
        {"get", l_clock_get}, {"set", l_clock_set}, {"advance", l_clock_advance}, {NULL, NULL}
    };
    luaL_newlib(L, clock_funcs);
    lua_setfield(L, -2, "_virtual_clock");
    return 1;
}
