/* `require "edge"` outside the server (busted unit specs): the same module C,
 * with a runtime where edge.sleep advances a virtual clock instead of waiting,
 * so timing logic in scripts is testable instantly. edge.now() reads that clock.
 *
 * The clock counts whole nanoseconds from 0 (1970-01-01), so sleeps and
 * advances add up exactly (a hundred edge.sleep(0.01) make 1.0, not
 * 1.0000000000000007) and a reading is the double nearest the decimal time:
 * edge.sleep(0.01) from 0 reads 0.01. It does not start at the wall-clock
 * time: near 1.7e9 s a double's step is 2.4e-7 s, and edge.sleep(0.01) then
 * moved edge.now() by 0.0099999905. A spec that needs a date sets one. */
#include "cache.h"
#include "lua_edge.h"
#include "log.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>

int luaopen_edge(lua_State *L);

static long long virtual_ns;

/* Seconds up to about 290 years either way fit in a long long of ns. */
#define CLOCK_MAX_SECONDS 9.0e9

static double now_seconds(void)
{
    return (double)virtual_ns / 1e9;
}

/* Argument arg in seconds, checked, as whole nanoseconds. */
static long long check_ns(lua_State *L, int arg)
{
    double s = luaL_checknumber(L, arg);
    luaL_argcheck(L, fabs(s) <= CLOCK_MAX_SECONDS, arg, "seconds out of range");
    return llround(s * 1e9);
}

/* Moves the clock forward by ns, or raises if it would leave the range. */
static void advance_ns(lua_State *L, long long ns)
{
    if ((double)virtual_ns + (double)ns > CLOCK_MAX_SECONDS * 1e9)
        luaL_error(L, "the virtual clock would pass %f s", CLOCK_MAX_SECONDS);
    virtual_ns += ns;
}

/* edge._virtual_clock: what lua/edge/testing/clock.lua drives. */
static int l_clock_get(lua_State *L)
{
    lua_pushnumber(L, now_seconds());
    return 1;
}

static int l_clock_set(lua_State *L)
{
    virtual_ns = check_ns(L, 1);
    return 0;
}

static int l_clock_advance(lua_State *L)
{
    long long ns = check_ns(L, 1);
    luaL_argcheck(L, ns >= 0, 1, "seconds must be >= 0");
    advance_ns(L, ns);
    lua_pushnumber(L, now_seconds());
    return 1;
}

static double module_now(void *ud)
{
    return now_seconds();
}

/* seconds was checked by edge.sleep (0 to a year). */
static int module_sleep(lua_State *L, double seconds, void *ud)
{
    advance_ns(L, llround(seconds * 1e9));
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
    if (module_runtime.cache == NULL) module_runtime.cache = edge_cache_new(64u << 20);
    edge_lua_push_module(L, &module_runtime);
    static const luaL_Reg clock_funcs[] = {
        {"get", l_clock_get}, {"set", l_clock_set}, {"advance", l_clock_advance}, {NULL, NULL}
    };
    luaL_newlib(L, clock_funcs);
    lua_setfield(L, -2, "_virtual_clock");
    return 1;
}
