/* A worker's Lua VM: loading the script, running its hooks, edge.sleep. */
#include "script.h"
#include "common.h"
#include "dispatch.h"
#include "health_check.h"
#include "log.h"
#include "lua_fetch.h"
#include "lua_proxy.h"
#include "body_pipe.h"
#include "lua_req.h"
#include "lua_response.h"
#include "lua_timer.h"
#include "lua_upstream.h"
#include "metrics.h"
#include "request.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the server's runtime for the edge module ---- */

static double server_now(void *ud)
{
    edge_script *s = ud;
    return s->loop ? ev_now(s->loop) : ev_time();
}

static void on_sleep_done(struct ev_loop *loop, ev_timer *w, int revents);

double edge_script_sleep_scale = 1.0;

/* An API may only yield the respond coroutine itself: not cache_key (the
 * main thread), not a coroutine the script made (we could not resume it), and
 * not across a C call. */
edge_request *edge_script_waitable(lua_State *L, edge_script *s, const char *what)
{
    edge_request *req = s->current;
    if (req == NULL || s->loop == NULL || L != req->lua.co || !lua_isyieldable(L))
        luaL_error(L, "%s cannot wait here: only in respond, not in cache_key, a nested coroutine "
                      "or a C call", what);
    return req;
}

int edge_script_wait(lua_State *L, edge_request *req, edge_lua_cancel_fn cancel, void *ud, lua_KFunction k)
{
    req->lua.state = EDGE_LUA_WAITING;
    req->lua.cancel = cancel;
    req->lua.cancel_ud = ud;
    return lua_yieldk(L, 0, 0, k);
}

static void stop_sleep(void *ud)
{
    edge_lua_ctx *ctx = ud;
    ev_timer_stop(ctx->script->loop, &ctx->timer);
}

static int server_sleep(lua_State *L, double seconds, void *ud)
{
    edge_script *s = ud;
    edge_request *req = edge_script_waitable(L, s, "edge.sleep");
    ev_timer_init(&req->lua.timer, on_sleep_done, seconds * edge_script_sleep_scale, 0.);
    ev_timer_start(s->loop, &req->lua.timer);
    return edge_script_wait(L, req, stop_sleep, &req->lua, NULL);
}

static void server_log(lua_State *L, int level, const char *where, const char *msg, void *ud)
{
    edge_script *s = ud;
    edge_request *req = s->current;
    if (req) edge_log_write(level, req->conn_id, "[lua] %s%s (request %s)", where, msg, edge_request_id(req));
    else edge_log_write(level, 0, "[lua] %s%s", where, msg);
}

/* ---- the instruction budget ----
 *
 * One budget per hook run (cache_key; respond across its sleeps), shared by
 * every coroutine the run creates. Lua gives a new coroutine a fresh hook
 * count, so each thread pays in advance: its count hook is armed with a slice
 * taken from the request's budget_left, and takes the next slice when it
 * fires. A thread that ends early forfeits the rest of its slice (overcharged,
 * never undercharged). The hook's thread (the respond coroutine, or the main
 * thread for cache_key) takes an eighth of what is left, so a request that
 * runs fewer than budget / 8 instructions never calls the hook, and the
 * hook's thread never holds back more than an eighth of what is left from
 * the coroutines. Coroutines the script creates (coroutine.create and
 * coroutine.wrap arm them) take slices of SLICE_NESTED. Between slices the
 * count is kept in budget_left, found through s->current. */

enum {
    SLICE_NESTED = 1000,   /* a coroutine the script made: what it may forfeit */
    SLICE_MIN    = 128     /* the hook's thread, near the end of the budget */
};

static const char BUDGET_MSG[] = "instruction budget exceeded";
static const char NOMEM_MSG[] = "not enough memory: the VM reached --lua-memory";

static edge_script *script_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static void on_budget(lua_State *L, lua_Debug *ar);

/* Arms thread L with the next slice of ctx's budget; 0 when it is spent. */
static int take_slice(edge_lua_ctx *ctx, lua_State *L, int hook_thread)
{
    long left = ctx->budget_left;
    if (left <= 0) return 0;
    long slice = hook_thread ? left / 8 : SLICE_NESTED;
    if (slice < SLICE_MIN) slice = SLICE_MIN;
    if (slice > left) slice = left;
    if (slice > 0x7fffffff) slice = 0x7fffffff;
    ctx->budget_left = left - slice;
    lua_sethook(L, on_budget, LUA_MASKCOUNT, (int)slice);
    return 1;
}

/* Raised at every instruction from now on, so a script that catches the
 * error with pcall still cannot go on. */
static int budget_exceeded(lua_State *L)
{
    lua_sethook(L, on_budget, LUA_MASKCOUNT, 1);
    return luaL_error(L, "%s", BUDGET_MSG);
}

static int is_hook_thread(const edge_script *s, const edge_request *req, const lua_State *L)
{
    return L == req->lua.co || L == s->L;
}

/* A slice is used up. With no request running (the script's top level, a
 * finalizer), there is no budget to charge: the thread takes another slice. */
static void on_budget(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    edge_script *s = script_of(L);
    edge_request *req = s->current;
    if (req == NULL) lua_sethook(L, on_budget, LUA_MASKCOUNT, SLICE_NESTED);
    else if (!take_slice(&req->lua, L, is_hook_thread(s, req, L))) budget_exceeded(L);
}

static void start_budget(edge_script *s, edge_lua_ctx *ctx, lua_State *L)
{
    ctx->budget_left = s->budget;
    take_slice(ctx, L, 1);
}

/* coroutine.create and coroutine.wrap (upvalue 1: the library's own) arm
 * the new thread with a slice of the running request's budget. */
static int budgeted_coroutine(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lua_State *co = lua_tothread(L, -1);
    if (co == NULL && lua_getupvalue(L, -1, 1) != NULL) {   /* wrap: the closure's upvalue */
        co = lua_tothread(L, -1);
        lua_pop(L, 1);
    }
    if (co == NULL) return 1;
    edge_script *s = script_of(L);
    if (s->current == NULL) lua_sethook(co, on_budget, LUA_MASKCOUNT, SLICE_NESTED);
    else if (!take_slice(&s->current->lua, co, 0)) return budget_exceeded(L);
    return 1;
}

static void install_budgeted_coroutines(lua_State *L)
{
    lua_getglobal(L, "coroutine");
    const char *names[] = {"create", "wrap"};
    for (size_t i = 0; i < EDGE_ARRAY_LEN(names); i++) {
        lua_getfield(L, -1, names[i]);
        lua_pushcclosure(L, budgeted_coroutine, 1);
        lua_setfield(L, -2, names[i]);
    }
    lua_pop(L, 1);
}

/* ---- errors ---- */

/* Counts a failed hook run: any error, and budget kills apart. */
static void count_error(edge_script *s, const char *msg)
{
    if (s == NULL || s->counters == NULL) return;
    EDGE_COUNT(s->counters->lua_errors);
    if (msg && strstr(msg, BUDGET_MSG)) EDGE_COUNT(s->counters->lua_budget_kills);
}

static void log_hook_error(edge_request *req, const char *hook, const char *msg)
{
    edge_log(EDGE_LOG_ERR, req->conn_id, "lua error in %s (request %s): %s", hook,
             edge_request_id(req), msg);
}

/* The message for a failed protected call whose error object is on top of L
 * (a memory error's is a string Lua made in advance: reading it allocates
 * nothing). */
static const char *error_text(lua_State *L, int rc)
{
    if (rc == LUA_ERRMEM) return NOMEM_MSG;
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    return msg ? msg : "(error object is not a string)";
}

/* ---- a request's Lua state ---- */

/* Makes what a hook run needs and cannot do without allocating: the req
 * userdata, and for respond its coroutine, each anchored in the registry.
 * Runs under lua_pcall (a memory error fails the request, not the process);
 * a ctx field is set only once its anchor exists, so edge_script_release
 * cleans up after any step that failed. */
static int make_lua_state(lua_State *L)
{
    edge_request *req = lua_touserdata(L, 1);
    edge_lua_ctx *ctx = &req->lua;
    if (ctx->ud == NULL) {
        edge_lua_req *ud = edge_lua_req_push(L, req);
        ctx->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        ctx->ud = ud;
    }
    if (lua_toboolean(L, 2)) {
        lua_State *co = lua_newthread(L);
        ctx->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        ctx->co = co;
    }
    return 0;
}

/* Attaches req to the VM, then makes its Lua state (see make_lua_state).
 * Returns LUA_OK, or logs the failure and releases req's Lua state. */
static int prepare(edge_script *s, edge_request *req, const char *hook, int want_thread)
{
    edge_lua_ctx *ctx = &req->lua;
    if (ctx->script == NULL) {
        ctx->script = s;
        s->refs++;
    }
    if (ctx->ud != NULL && !want_thread) return LUA_OK;
    lua_State *L = s->L;
    lua_pushcfunction(L, make_lua_state);
    lua_pushlightuserdata(L, req);
    lua_pushboolean(L, want_thread);
    int rc = lua_pcall(L, 2, 0, 0);
    if (rc == LUA_OK) return LUA_OK;
    log_hook_error(req, hook, error_text(L, rc));
    count_error(s, NULL);
    lua_pop(L, 1);
    edge_script_release(req);
    return rc;
}

void edge_script_release(edge_request *req)
{
    edge_lua_ctx *ctx = &req->lua;
    edge_script *s = ctx->script;
    if (s == NULL) return;
    if (ctx->state == EDGE_LUA_WAITING && ctx->cancel) ctx->cancel(ctx->cancel_ud);
    if (ctx->co) {
        edge_request *running = s->current;
        s->current = req;                  /* to-be-closed variables run on req's budget */
        lua_resetthread(ctx->co);
        s->current = running;
        luaL_unref(s->L, LUA_REGISTRYINDEX, ctx->co_ref);
    }
    edge_pipe_close_lent(&ctx->lent_pipes);   /* edge.proxy bodies the script dropped */
    if (ctx->ud) {
        ctx->ud->req = NULL;               /* a kept reference now says "finished" */
        luaL_unref(s->L, LUA_REGISTRYINDEX, ctx->ud_ref);
    }
    s->refs--;
    memset(ctx, 0, sizeof(*ctx));
    if (s->retired && s->refs == 0) edge_script_retire(s);
}

/* ---- hooks ---- */

/* cache_key's message handler: the message and a traceback. A memory error
 * here ends the call with LUA_ERRMEM, which is logged as such. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int edge_script_cache_key(edge_script *s, edge_request *req)
{
    if (s->cache_key_ref == LUA_NOREF) return EDGE_OK;
    if (prepare(s, req, "cache_key", 0) != LUA_OK) return EDGE_ERROR;
    lua_State *L = s->L;
    int base = lua_gettop(L);
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cache_key_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->lua.ud_ref);
    start_budget(s, &req->lua, L);
    s->current = req;
    int rc = lua_pcall(L, 1, 1, base + 1);
    s->current = NULL;
    lua_sethook(L, NULL, 0, 0);

    int status = EDGE_OK;
    if (rc != LUA_OK) {
        const char *msg = error_text(L, rc);
        log_hook_error(req, "cache_key", msg);
        count_error(s, msg);
        status = EDGE_ERROR;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *key = lua_tolstring(L, -1, &n);
        edge_buf_append(&req->cache_key, key, n);
        req->has_cache_key = 1;
    } else if (!lua_isnil(L, -1) && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1))) {
        edge_log(EDGE_LOG_ERR, req->conn_id,
                 "cache_key (request %s) returned %s: expected a string, or nil to bypass the cache",
                 edge_request_id(req), luaL_typename(L, -1));
        count_error(s, NULL);
        status = EDGE_ERROR;
    }
    lua_settop(L, base);
    if (status != EDGE_OK) edge_script_release(req);
    return status;
}

/* Collects the result of a finished respond coroutine into req->resp. */
static int take_response(edge_request *req, lua_State *co, int nres)
{
    char err[256];
    int rc = EDGE_ERROR;
    if (nres == 0) {
        snprintf(err, sizeof(err), "expected a table { status = integer, headers = table, "
                                   "body = string }, got no value");
    } else if ((rc = edge_lua_to_response_protected(co, -nres, &req->resp, err, sizeof(err))) == EDGE_OK) {
        return EDGE_OK;
    }
    if (rc == EDGE_LUA_RAISED) log_hook_error(req, "respond", err);
    else edge_log(EDGE_LOG_ERR, req->conn_id, "respond (request %s) returned a bad value: %s",
                  edge_request_id(req), err);
    count_error(req->lua.script, NULL);
    return EDGE_ERROR;
}

/* The failed coroutine's traceback, built on the main thread (argument 1:
 * the coroutine, 2: its error object). */
static int build_traceback(lua_State *L)
{
    lua_State *co = lua_touserdata(L, 1);
    const char *msg = lua_tostring(L, 2);
    if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 2));
    luaL_traceback(L, co, msg, 0);
    return 1;
}

/* Logs respond's error with a traceback, or with the bare message when
 * there is no memory left to build one. */
static void log_respond_error(edge_script *s, edge_request *req, lua_State *co)
{
    char bare[512];
    const char *msg = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;
    snprintf(bare, sizeof(bare), "%s", msg ? msg : "(error object is not a string; "
             "no memory left to describe it)");
    count_error(s, bare);
    lua_State *L = s->L;
    int base = lua_gettop(L);
    const char *text = bare;
    if (lua_checkstack(L, 3)) {
        lua_pushcfunction(L, build_traceback);
        lua_pushlightuserdata(L, co);
        lua_xmove(co, L, 1);
        if (lua_pcall(L, 2, 1, 0) == LUA_OK) text = lua_tostring(L, -1);
    }
    log_hook_error(req, "respond", text);
    lua_settop(L, base);
}

/* Resumes the respond coroutine; returns EDGE_OK, EDGE_AGAIN or EDGE_ERROR.
 * On anything but EDGE_AGAIN the request's Lua state is released. */
static int resume(edge_script *s, edge_request *req, int nargs)
{
    edge_lua_ctx *ctx = &req->lua;
    lua_State *co = ctx->co;
    int nres = 0;
    ctx->state = EDGE_LUA_RUNNING;
    s->current = req;
    int rc = lua_resume(co, s->L, nargs, &nres);
    s->current = NULL;

    int status;
    if (rc == LUA_YIELD && ctx->state == EDGE_LUA_WAITING) {
        return EDGE_AGAIN;
    } else if (rc == LUA_YIELD) {
        edge_log(EDGE_LOG_ERR, req->conn_id, "respond (request %s) yielded outside an edge "
                 "API call (coroutine.yield in respond is not allowed)", edge_request_id(req));
        count_error(s, NULL);
        status = EDGE_ERROR;
    } else if (rc == LUA_OK) {
        status = take_response(req, co, nres);
    } else if (rc == LUA_ERRMEM) {
        log_hook_error(req, "respond", NOMEM_MSG);
        count_error(s, NULL);
        status = EDGE_ERROR;
    } else {
        log_respond_error(s, req, co);
        status = EDGE_ERROR;
    }
    ctx->state = EDGE_LUA_IDLE;
    edge_script_release(req);
    return status;
}

int edge_script_respond(edge_script *s, edge_request *req)
{
    if (prepare(s, req, "respond", 1) != LUA_OK) return EDGE_ERROR;
    edge_lua_ctx *ctx = &req->lua;
    lua_State *co = ctx->co;
    start_budget(s, ctx, co);
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->respond_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ctx->ud_ref);
    return resume(s, req, 1);
}

void edge_script_wake(edge_request *req)
{
    req->lua.cancel = NULL;
    req->lua.cancel_ud = NULL;
    int rc = resume(req->lua.script, req, 0);
    if (rc != EDGE_AGAIN) edge_dispatch_finish(req, rc);
}

static void on_sleep_done(struct ev_loop *loop, ev_timer *w, int revents)
{
    edge_lua_ctx *ctx = edge_container_of(w, edge_lua_ctx, timer);
    edge_script_wake(edge_container_of(ctx, edge_request, lua));
}

void edge_script_cancel(edge_request *req)
{
    if (req->lua.state == EDGE_LUA_WAITING)
        edge_log(EDGE_LOG_INFO, req->conn_id, "request %s cancelled: client closed while waiting",
                 edge_request_id(req));
    edge_script_release(req);
}

/* ---- memory ---- */

static size_t memory_limit;

void edge_script_set_memory_limit(size_t bytes)
{
    memory_limit = bytes;
}

/* Lua's allocator, with a bound: past it Lua gets NULL, collects garbage and
 * retries, then raises "not enough memory" in the hook that asked, which
 * fails that request with 500; the worker and its other requests go on. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    edge_script *s = ud;
    size_t old = ptr ? osize : 0;     /* with ptr NULL, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        s->mem_used -= old;
        return NULL;
    }
    if (s->mem_limit && nsize > old && s->mem_used + (nsize - old) > s->mem_limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p == NULL) return NULL;
    s->mem_used = s->mem_used - old + nsize;
    return p;
}

static int on_panic(lua_State *L)
{
    edge_log(EDGE_LOG_ALERT, 0, "lua panic: %s", lua_tostring(L, -1));
    abort();
}

/* ---- loading ---- */

/* Where edge's own Lua libraries (edge.router, ...) live, found from the
 * binary's path: PREFIX/bin/edge (make install) -> PREFIX/share/lua/5.4;
 * otherwise the repository's lua/ beside ./edge or above build/<kind>/edge. */
static void push_library_dir(lua_State *L)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        lua_pushliteral(L, "lua");
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    size_t len = strlen(exe);
    if (len >= 4 && strcmp(exe + len - 4, "/bin") == 0) {
        exe[len - 4] = '\0';
        lua_pushfstring(L, "%s/share/lua/5.4", exe);
        return;
    }
    char *build = strstr(exe, "/build/");   /* build/<kind>/edge: the repository's lua/ */
    if (build) *build = '\0';
    lua_pushfstring(L, "%s/lua", exe);
}

/* Lets the script require modules that sit beside it, then edge's own
 * libraries, then whatever LUA_PATH or the default says. */
static void set_package_path(lua_State *L, const char *path)
{
    const char *slash = strrchr(path, '/');
    lua_getglobal(L, "package");
    if (slash) lua_pushlstring(L, path, (size_t)(slash - path));
    else lua_pushliteral(L, ".");
    const char *dir = lua_tostring(L, -1);
    push_library_dir(L);
    const char *lib = lua_tostring(L, -1);
    lua_getfield(L, -3, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;%s", dir, dir, lib, lib,
                    lua_tostring(L, -1));
    lua_setfield(L, -5, "path");
    lua_pop(L, 4);
}

static void install_edge_module(edge_script *s)
{
    lua_State *L = s->L;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    edge_lua_push_module(L, &s->rt);
    lua_setfield(L, -2, "edge");
    lua_pop(L, 1);
}

/* Checks the module table on top of the stack and anchors its hooks. */
static int take_hooks(edge_script *s, const char *path, char *err, size_t errlen)
{
    lua_State *L = s->L;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s must return a table of hooks { cache_key = function, "
                 "respond = function }, got %s", path, luaL_typename(L, -1));
        return EDGE_ERROR;
    }
    if (lua_getfield(L, -1, "respond") != LUA_TFUNCTION) {
        snprintf(err, errlen, "%s: hook 'respond' must be a function, got %s", path, luaL_typename(L, -1));
        return EDGE_ERROR;
    }
    s->respond_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int t = lua_getfield(L, -1, "cache_key");
    if (t != LUA_TFUNCTION && t != LUA_TNIL) {
        snprintf(err, errlen, "%s: hook 'cache_key' must be a function or nil, got %s", path,
                 luaL_typename(L, -1));
        return EDGE_ERROR;
    }
    s->cache_key_ref = t == LUA_TNIL ? (lua_pop(L, 1), LUA_NOREF) : luaL_ref(L, LUA_REGISTRYINDEX);
    return EDGE_OK;
}

int edge_script_open(edge_script *s, const char *path, long budget, struct ev_loop *loop,
                     int worker_id, struct edge_cache *cache, double cache_ttl, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->budget = budget;
    s->loop = loop;
    s->cache_key_ref = s->respond_ref = LUA_NOREF;
    s->rt = (edge_lua_runtime){.now = server_now, .sleep = server_sleep, .fetch = edge_lua_fetch, .proxy = edge_lua_proxy,
                               .log = server_log, .push_timer = edge_lua_timer_push,
                               .ud = s, .worker_id = worker_id, .cache = cache,
                               .cache_ttl = cache_ttl};
    s->mem_limit = memory_limit;
    lua_State *L = s->L = lua_newstate(lua_alloc, s);
    if (L != NULL) lua_atpanic(L, on_panic);
    if (L == NULL) {
        snprintf(err, errlen, "cannot create a Lua state");
        return EDGE_ERROR;
    }
    luaL_openlibs(L);
    install_budgeted_coroutines(L);
    edge_lua_req_register(L);
    install_edge_module(s);
    set_package_path(L, path);

    lua_pushcfunction(L, traceback);
    if (luaL_loadfilex(L, path, "t") != LUA_OK || lua_pcall(L, 0, 1, -2) != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        edge_script_close(s);
        return EDGE_ERROR;
    }
    int rc = take_hooks(s, path, err, errlen);
    if (rc == EDGE_OK) edge_lua_upstream_seal(L);     /* define only while loading */
    lua_settop(L, 0);
    if (rc != EDGE_OK) edge_script_close(s);
    return rc;
}

void edge_script_stop_checks(edge_script *s)
{
    edge_health_stop(s->health);
    s->health = NULL;
}

void edge_script_close(edge_script *s)
{
    edge_script_stop_checks(s);     /* they point into the VM's upstreams */
    if (s->L) lua_close(s->L);
    s->L = NULL;
}

void edge_script_retire(edge_script *s)
{
    s->retired = 1;
    edge_script_stop_checks(s);     /* a retired VM is never checked, nor kept alive by checks */
    if (s->refs > 0) return;
    edge_script_close(s);
    free(s);
}
