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
    return 1;
}
