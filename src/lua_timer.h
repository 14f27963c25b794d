/* edge.timer in the server: edge.timer.at(delay, fn, ...) and
 * edge.timer.every(interval, fn, ...), OpenResty's ngx.timer model.
 *
 * Each pending timer is an ev_timer on the worker's loop and a registry
 * reference to { fn, args... } in the VM that made it; the VM's timers live
 * in a per-VM list freed when the VM closes. On expiry fn(false, ...) runs as
 * a task (edge_script_spawn): a coroutine of its own that may wait. When the
 * worker stops or a reload retires the VM, every pending timer runs at once
 * with premature = true and every-timers end.
 *
 * every() keeps a fixed cadence (the next tick is armed when one fires, as
 * OpenResty does) but its runs never overlap: a tick that comes while the
 * previous run is still going (waiting in edge.sleep or edge.fetch) is
 * skipped. */
#ifndef EDGE_LUA_TIMER_H
#define EDGE_LUA_TIMER_H

#include <lauxlib.h>
#include <lua.h>
#include <math.h>

#define EDGE_LUA_TIMER_DEFAULT_MAX 1024
#define EDGE_LUA_TIMER_MAX_DELAY   (86400.0 * 365)   /* a year, like edge.sleep */
#define EDGE_LUA_TIMER_TOO_MANY    "too many pending timers"

struct edge_script;
struct edge_worker;

/* The bound on pending timers per VM (--lua-max-timers), for VMs opened from
 * now on. */
void edge_lua_timer_set_max(int max);
/* The server runtime's push_timer: pushes the edge.timer table for VM s
 * (ud), creating the VM's timer list. */
void edge_lua_timer_push(lua_State *L, void *ud);
/* The worker w runs s now: timers made while loading start on w's loop, and
 * timers made from now on start at once. */
void edge_lua_timer_start(struct edge_script *s, struct edge_worker *w);
/* The worker stops or s was replaced by a reload: every pending timer runs
 * now with premature = true, every-timers end, and new timers are refused
 * with why. */
void edge_lua_timer_expire_all(struct edge_script *s, const char *why);

/* Checks edge.timer.at/every's arguments (1: delay, 2: fn), shared by the
 * server and the busted module; returns the delay. every's must be > 0. */
static inline double edge_lua_timer_check_args(lua_State *L, int every)
{
    double d = luaL_checknumber(L, 1);
    luaL_argcheck(L, isfinite(d) && d >= 0 && d <= EDGE_LUA_TIMER_MAX_DELAY, 1,
                  "delay must be a number of seconds >= 0 and at most a year");
    luaL_argcheck(L, !every || d > 0, 1, "interval must be > 0");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    return d;
}

/* Anchors { fn, arg1, ..., argN } (stack 2 .. top; the table may hold nils)
 * in the registry: returns the ref, N in *nargs. May raise (memory). */
static inline int edge_lua_timer_anchor(lua_State *L, int *nargs)
{
    *nargs = lua_gettop(L) - 2;
    lua_createtable(L, *nargs + 1, 0);
    for (int i = 2; i <= *nargs + 2; i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i - 1);
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

#endif
