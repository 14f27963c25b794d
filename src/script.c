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
#include "lua_coroutine.h"
#include "worker.h"

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

/* An API may wait in any thread of a hook run's chain of resumes, unless a
 * C function without a continuation sits in between (lua_coroutine.c). */
edge_request *edge_script_waitable(lua_State *L, edge_script *s, const char *what)
{
    edge_request *req = s->current;
    if (req == NULL || s->loop == NULL || req->lua.co == NULL)
        luaL_error(L, "%s cannot wait here: only while a hook or a timer runs, not at the "
                      "script's top level", what);
    const char *why = edge_lua_wait_refusal(s, L, req->lua.co);
    if (why) luaL_error(L, "%s cannot wait here: %s", what, why);
    return req;
}

int edge_script_wait(lua_State *L, edge_request *req, edge_lua_cancel_fn cancel, void *ud, lua_KFunction k)
{
    req->lua.state = EDGE_LUA_WAITING;
    req->lua.cancel = cancel;
    req->lua.cancel_ud = ud;
    edge_lua_thread_mark(L, 1);          /* the resumes above L yield in turn */
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

/* coroutine.create (upvalue 1: the library's own) arms the new thread with
 * a slice of the running request's budget; coroutine.wrap is made from it
 * (lua_coroutine.c). */
static int budgeted_create(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lua_State *co = lua_tothread(L, -1);
    edge_script *s = script_of(L);
    if (s->current == NULL) lua_sethook(co, on_budget, LUA_MASKCOUNT, SLICE_NESTED);
    else if (!take_slice(&s->current->lua, co, 0)) return budget_exceeded(L);
    return 1;
}

static void install_budgeted_create(lua_State *L)
{
    lua_getglobal(L, "coroutine");
    lua_getfield(L, -1, "create");
    lua_pushcclosure(L, budgeted_create, 1);
    lua_setfield(L, -2, "create");
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

/* The loading's message handler: the message and a traceback. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ---- tasks: runs that answer no client ---- */

/* A task is a request of its own that no connection owns: its Lua state
 * runs like a request's, and fetches use its worker. The log phase's task
 * is a copy of the request it logs (with the client's address, and the
 * response's status and fields). */
typedef struct edge_task {
    edge_request req;
    const char  *what;                 /* "timer", "log": for log lines */
    struct sockaddr_storage peer;      /* the logged request's client */
    double       duration;             /* log: seconds from the request's start to its response */
    uint64_t     body_bytes;           /* log: the response body's size (whole bodies) */
    unsigned     streamed : 1;         /* log: the body streamed (its size is not known yet) */
} edge_task;

static const edge_request_ops task_ops = {.respond = NULL};   /* a task has no client to answer */

static edge_task *task_of(edge_request *req)
{
    return edge_container_of(req, edge_task, req);
}

/* The hooks' names in the script's table (enum edge_hook's order). */
static const char *const hook_names[EDGE_HOOK_COUNT] = {"access", "cache_key", "respond", "on_response", "log"};

static const char *hook_name(edge_request *req)
{
    int h = req->lua.hook;
    if (h >= 0 && h < EDGE_HOOK_COUNT) return hook_names[h];
    return req->ops == &task_ops ? task_of(req)->what : "lua";
}

/* ---- the coroutine pool ----
 *
 * Every hook run takes a coroutine; a finished one (its function returned,
 * or reset after an error or a cancel) goes back to the pool, so a request
 * that never waits makes no new thread. */

/* Pops an idle coroutine, or makes one (may raise: under lua_pcall). */
static lua_State *take_thread(edge_script *s, lua_State *L, int *ref)
{
    if (s->pool_n > 0) {
        s->pool_n--;
        *ref = s->pool_ref[s->pool_n];
        return s->pool[s->pool_n];
    }
    lua_State *co = lua_newthread(L);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    edge_lua_thread_set_root(co);
    return co;
}

/* Gives the run's coroutine back: one that finished, or was cancelled while
 * it waited (reset: its pending to-be-closed variables run on the run's
 * budget), is pooled; one that died of an error is dropped (an error raised
 * in a hook, the budget's, leaves the thread with hooks disabled). */
static void give_thread(edge_script *s, edge_request *req)
{
    edge_lua_ctx *ctx = &req->lua;
    lua_State *co = ctx->co;
    if (co == NULL) return;
    ctx->co = NULL;
    int reusable = lua_status(co) == LUA_OK || lua_status(co) == LUA_YIELD;
    edge_request *running = s->current;
    s->current = req;
    edge_lua_chain_close(co);            /* cancelled mid-wait: the coroutines it waited through */
    if (lua_status(co) != LUA_OK && lua_resetthread(co) != LUA_OK) reusable = 0;
    s->current = running;
    lua_settop(co, 0);
    lua_sethook(co, NULL, 0, 0);
    if (reusable && s->pool_n < EDGE_SCRIPT_POOL) {
        s->pool[s->pool_n] = co;
        s->pool_ref[s->pool_n++] = ctx->co_ref;
    } else {
        luaL_unref(s->L, LUA_REGISTRYINDEX, ctx->co_ref);
    }
}

/* ---- a request's Lua state ---- */

/* Makes what a hook run needs and cannot do without allocating: the req
 * userdata (argument 2 true: a request's; a task has none) and the run's
 * coroutine, each anchored in the registry, then moves the argument count
 * given (3) of values above them (a task's function and arguments) into the
 * coroutine. Runs under lua_pcall (a memory error fails the run, not the
 * process); a ctx field is set only once its anchor exists, so
 * edge_script_release cleans up after any step that failed. */
static int make_lua_state(lua_State *L)
{
    edge_request *req = lua_touserdata(L, 1);
    edge_lua_ctx *ctx = &req->lua;
    int nmove = (int)lua_tointeger(L, 3);
    if (ctx->ud == NULL && lua_toboolean(L, 2)) {
        edge_lua_req *ud = edge_lua_req_push(L, req);
        ctx->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        ctx->ud = ud;
    }
    int ref;
    lua_State *co = take_thread(ctx->script, L, &ref);
    ctx->co_ref = ref;
    ctx->co = co;
    if (nmove > 0) {
        luaL_checkstack(co, nmove + LUA_MINSTACK, "too many timer arguments");
        lua_xmove(L, co, nmove);
    }
    return 0;
}

/* Attaches req to the VM, then makes its Lua state for a run of hook (see
 * make_lua_state; nmove values from the top of s->L go to the coroutine).
 * Returns LUA_OK, or logs the failure and releases req's Lua state. */
static int prepare(edge_script *s, edge_request *req, int hook, int nmove)
{
    edge_lua_ctx *ctx = &req->lua;
    if (ctx->script == NULL) {
        ctx->script = s;
        s->refs++;
    }
    ctx->hook = hook;
    int wants_ud = hook != EDGE_HOOK_TASK && ctx->ud == NULL;
    if (!wants_ud && nmove == 0 && s->pool_n > 0) {
        ctx->co = take_thread(s, s->L, &ctx->co_ref);    /* from the pool: nothing to allocate */
        return LUA_OK;
    }
    lua_State *L = s->L;
    lua_pushcfunction(L, make_lua_state);
    lua_pushlightuserdata(L, req);
    lua_pushboolean(L, hook != EDGE_HOOK_TASK);
    lua_pushinteger(L, nmove);
    if (nmove > 0) lua_rotate(L, -(nmove + 4), 4);   /* the function and its arguments last */
    int rc = lua_pcall(L, 3 + nmove, 0, 0);
    if (rc == LUA_OK) return LUA_OK;
    log_hook_error(req, hook_name(req), error_text(L, rc));
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
    if (s->loop) ev_timer_stop(s->loop, &ctx->timer);   /* a sleep, or a task's start */
    give_thread(s, req);
    edge_pipe_close_lent(&ctx->lent_pipes);   /* edge.proxy bodies the script dropped */
    if (ctx->ud) {
        ctx->ud->req = NULL;               /* a kept reference now says "finished" */
        luaL_unref(s->L, LUA_REGISTRYINDEX, ctx->ud_ref);
    }
    s->refs--;
    edge_request *next = ctx->task_next, *prev = ctx->task_prev;
    memset(ctx, 0, sizeof(*ctx));
    ctx->task_next = next;                 /* a task's list links are the task's, not the run's */
    ctx->task_prev = prev;
    if (s->retired && s->refs == 0) edge_script_retire(s);
}

/* ---- what a hook run returns ---- */

/* Collects the result of a finished respond (or an answering access) into
 * req->resp. */
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
    if (rc == EDGE_LUA_RAISED) log_hook_error(req, hook_name(req), err);
    else edge_log(EDGE_LOG_ERR, req->conn_id, "%s (request %s) returned a bad value: %s",
                  hook_name(req), edge_request_id(req), err);
    count_error(req->lua.script, NULL);
    return EDGE_ERROR;
}

static int take_cache_key(edge_request *req, lua_State *co, int nres)
{
    if (nres == 0 || lua_isnil(co, -nres) || (lua_isboolean(co, -nres) && !lua_toboolean(co, -nres)))
        return EDGE_OK;
    if (lua_type(co, -nres) == LUA_TSTRING) {
        size_t n;
        const char *key = lua_tolstring(co, -nres, &n);
        edge_buf_append(&req->cache_key, key, n);
        req->has_cache_key = 1;
        return EDGE_OK;
    }
    edge_log(EDGE_LOG_ERR, req->conn_id,
             "cache_key (request %s) returned %s: expected a string, or nil to bypass the cache",
             edge_request_id(req), luaL_typename(co, -nres));
    count_error(req->lua.script, NULL);
    return EDGE_ERROR;
}

/* access: nothing (or nil) goes on; a response table answers. */
static int take_access(edge_request *req, lua_State *co, int nres)
{
    if (nres == 0 || lua_isnil(co, -nres)) return EDGE_OK;
    edge_response_clear(&req->resp);
    return take_response(req, co, nres) == EDGE_OK ? EDGE_DONE : EDGE_ERROR;
}

static int take_results(edge_request *req, lua_State *co, int nres)
{
    switch (req->lua.hook) {
    case EDGE_HOOK_ACCESS: return take_access(req, co, nres);
    case EDGE_HOOK_CACHE_KEY: return take_cache_key(req, co, nres);
    case EDGE_HOOK_RESPOND: return take_response(req, co, nres);
    default: return EDGE_OK;        /* on_response applied its changes; log and tasks return nothing */
    }
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

/* Logs a run's error with a traceback, or with the bare message when there
 * is no memory left to build one. */
static void log_run_error(edge_script *s, edge_request *req, lua_State *co)
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
    log_hook_error(req, hook_name(req), text);
    lua_settop(L, base);
}

/* Resumes the run's coroutine; returns EDGE_AGAIN while it waits, else
 * what the run gives (take_results), its coroutine back in the pool. */
static int resume(edge_script *s, edge_request *req, int nargs)
{
    edge_lua_ctx *ctx = &req->lua;
    lua_State *co = ctx->co;
    int nres = 0;
    ctx->state = EDGE_LUA_RUNNING;
    edge_lua_thread_mark(co, 0);
    edge_request *outer = s->current;      /* a task started from inside another run */
    s->current = req;
    int rc = lua_resume(co, s->L, nargs, &nres);
    s->current = outer;

    int status;
    if (rc == LUA_YIELD && ctx->state == EDGE_LUA_WAITING) {
        return EDGE_AGAIN;
    } else if (rc == LUA_YIELD) {
        edge_log(EDGE_LOG_ERR, req->conn_id, "%s (request %s) yielded outside an edge API call "
                 "(coroutine.yield is for coroutines the script makes)", hook_name(req),
                 edge_request_id(req));
        count_error(s, NULL);
        status = EDGE_ERROR;
    } else if (rc == LUA_OK) {
        status = take_results(req, co, nres);
    } else if (rc == LUA_ERRMEM) {
        log_hook_error(req, hook_name(req), NOMEM_MSG);
        count_error(s, NULL);
        status = EDGE_ERROR;
    } else {
        log_run_error(s, req, co);
        status = EDGE_ERROR;
    }
    ctx->state = EDGE_LUA_IDLE;
    give_thread(s, req);
    return status;
}

/* ---- on_response: the trampoline that runs in the coroutine ----
 *
 * Building res and reading it back allocate, so they happen inside the run
 * (protected), around the script's function. */

static void push_response_head(lua_State *L, const edge_response *resp)
{
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, resp->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, resp->n_headers);
    int t = lua_gettop(L);
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        lua_pushlstring(L, resp->data.base + h->name.off, h->name.len);
        lua_pushlstring(L, resp->data.base + h->value.off, h->value.len);
        edge_lua_add_repeatable(L, t);
    }
    lua_setfield(L, -2, "headers");
}

/* res (or the table the hook returned) becomes the response's status and
 * fields; its body stays. */
static int apply_response_head(lua_State *L, int status, lua_KContext kctx)
{
    (void)status;
    (void)kctx;
    edge_request *req = script_of(L)->current;
    int idx = lua_istable(L, -1) ? lua_gettop(L) : 3;     /* a returned table, else res */
    if (req->resp.status == 101) {       /* a WebSocket's 101: its fields may change, not its status */
        lua_getfield(L, idx, "status");
        if (lua_tointeger(L, -1) != 101) return luaL_error(L, "on_response: a 101 (WebSocket) keeps its status");
        lua_pop(L, 1);
        lua_pushinteger(L, 200);         /* what edge_lua_to_response accepts without the pipe */
        lua_setfield(L, idx, "status");
    }
    edge_response head = {.status = 200};
    char err[256];
    int rc = edge_lua_to_response_protected(L, idx, &head, err, sizeof(err));
    if (rc == EDGE_OK) {
        if (req->resp.status != 101) req->resp.status = head.status;
        req->resp.has_server = head.has_server;
        req->resp.has_date = head.has_date;
        edge_response_take_fields(&req->resp, &head);
    }
    edge_response_clear(&head);
    edge_buf_free(&head.data);
    edge_buf_free(&head.body);
    free(head.headers);
    if (rc != EDGE_OK) return luaL_error(L, "on_response: bad response: %s", err);
    return 0;
}

/* The run's function (a light C function: nothing allocated to start it).
 * Arguments: 1 the script's on_response, 2 the req userdata; the request is
 * the one running (s->current). */
static int run_on_response(lua_State *L)
{
    edge_request *req = script_of(L)->current;
    push_response_head(L, &req->resp);        /* 3: res, kept */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_callk(L, 2, 1, 0, apply_response_head);
    return apply_response_head(L, LUA_OK, 0);
}

/* ---- hooks ---- */

/* The pushes onto the run's coroutine allocate nothing: a thread has
 * LUA_MINSTACK free slots. */
int edge_script_run(edge_script *s, edge_request *req, enum edge_hook hook, edge_script_done_fn done)
{
    if (prepare(s, req, (int)hook, 0) != LUA_OK) return EDGE_ERROR;
    edge_lua_ctx *ctx = &req->lua;
    lua_State *co = ctx->co;
    ctx->done = done;
    start_budget(s, ctx, co);
    int nargs = 1;
    if (hook == EDGE_HOOK_ON_RESPONSE) {       /* its trampoline, around the script's function */
        lua_pushcfunction(co, run_on_response);
        nargs = 2;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->hook_ref[hook]);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ctx->ud_ref);
    return resume(s, req, nargs);
}

void edge_script_wake(edge_request *req)
{
    edge_lua_ctx *ctx = &req->lua;
    ctx->cancel = NULL;
    ctx->cancel_ud = NULL;
    edge_script_done_fn done = ctx->done;
    int rc = resume(ctx->script, req, 0);
    if (rc != EDGE_AGAIN) done(req, rc);
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
static edge_task *task_new(edge_worker *w, const char *what)
{
    edge_task *t = edge_calloc(1, sizeof(*t));
    edge_request_init(&t->req, &task_ops, w, 0);
    t->what = what;
    edge_worker_assign_id(w, &t->req);
    edge_lua_ctx *ctx = &t->req.lua;
    ctx->task_next = w->tasks;
    if (w->tasks) w->tasks->lua.task_prev = &t->req;
    w->tasks = &t->req;
    w->n_tasks++;
    return t;
}

static void task_free(edge_request *req)
{
    edge_worker *w = req->worker;
    edge_script_release(req);
    edge_lua_ctx *ctx = &req->lua;
    if (ctx->task_prev) ctx->task_prev->lua.task_next = ctx->task_next;
    else w->tasks = ctx->task_next;
    if (ctx->task_next) ctx->task_next->lua.task_prev = ctx->task_prev;
    if (--w->n_tasks == 0) ev_timer_stop(w->loop, &w->retired_tasks);   /* no replaced script's task is left */
    edge_request_free(req);
    free(task_of(req));
}

/* A task's run is over; its errors were logged by resume. */
static void task_done(edge_request *req, int rc)
{
    (void)rc;
    task_free(req);
}

int edge_script_spawn(edge_script *s, edge_worker *w, int nargs, const char *what)
{
    edge_task *t = task_new(w, what);
    edge_request *req = &t->req;
    if (prepare(s, req, EDGE_HOOK_TASK, nargs + 1) != LUA_OK) {
        task_free(req);
        return EDGE_ERROR;
    }
    req->lua.done = task_done;
    start_budget(s, &req->lua, req->lua.co);
    int rc = resume(s, req, nargs);
    if (rc == EDGE_AGAIN) return EDGE_OK;
    task_free(req);
    return rc == EDGE_OK ? EDGE_OK : EDGE_ERROR;
}

void edge_script_cancel_tasks(edge_worker *w)
{
    while (w->tasks) {
        edge_request *req = w->tasks;
        if (req->lua.state == EDGE_LUA_WAITING)
            edge_log(EDGE_LOG_INFO, 0, "%s task %s cancelled: the worker stopped", task_of(req)->what,
                     edge_request_id(req));
        task_free(req);
    }
}

void edge_script_cancel_retired_tasks(edge_worker *w)
{
    edge_request *req = w->tasks;
    while (req) {
        if (!req->lua.script || !req->lua.script->retired) {
            req = req->lua.task_next;
            continue;
        }
        edge_log(EDGE_LOG_WARN, 0, "%s task %s cancelled: its script was replaced by a reload "
                 "--drain-timeout ago", task_of(req)->what, edge_request_id(req));
        task_free(req);                  /* may close the VM: start over from the list's head */
        req = w->tasks;
    }
}

/* ---- the log phase ---- */

/* Copies what log(req, res) may read of the request and its response. */
static void copy_for_log(edge_task *t, edge_request *from)
{
    edge_request *to = &t->req;
    edge_request_copy(to, from, NULL);
    to->start = from->start;
    to->cache_status = from->cache_status;
    memcpy(to->id, edge_request_id(from), sizeof(to->id));
    if (from->peer) {
        t->peer = *from->peer;
        to->peer = &t->peer;
    }
    to->upstream = from->upstream;
    const edge_response *resp = &from->resp;
    to->resp.status = resp->status;
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        edge_response_add_header(&to->resp, resp->data.base + h->name.off, h->name.len,
                                 resp->data.base + h->value.off, h->value.len);
    }
    t->streamed = resp->pipe != NULL;
    t->body_bytes = resp->body.len;
    t->duration = ev_now(from->worker->loop) - from->start;
}

static int log_returned(lua_State *L, int status, lua_KContext kctx)
{
    (void)L;
    (void)status;
    (void)kctx;
    return 0;
}

/* The log task's function (a light C function): res is built here,
 * protected. Arguments: 1 the script's log, 2 the req userdata (the copy's);
 * the task is the one running (s->current). */
static int run_log(lua_State *L)
{
    edge_task *t = task_of(script_of(L)->current);
    push_response_head(L, &t->req.resp);
    if (t->streamed) lua_pushnil(L);
    else lua_pushinteger(L, (lua_Integer)t->body_bytes);
    lua_setfield(L, -2, "bytes_sent");
    lua_pushnumber(L, t->duration);
    lua_setfield(L, -2, "duration");
    if (t->req.cache_status) lua_pushstring(L, t->req.cache_status);
    else lua_pushnil(L);
    lua_setfield(L, -2, "cache");
    lua_callk(L, 2, 0, 0, log_returned);    /* log(req, res), with a continuation: log may wait */
    return 0;
}

static void on_log_start(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    edge_lua_ctx *ctx = edge_container_of(w, edge_lua_ctx, timer);
    edge_request *req = edge_container_of(ctx, edge_request, lua);
    int rc = resume(ctx->script, req, 2);
    if (rc != EDGE_AGAIN) task_free(req);
}

void edge_script_log(edge_script *s, edge_request *from)
{
    edge_worker *w = from->worker;
    edge_task *t = task_new(w, "log");
    copy_for_log(t, from);
    edge_request *req = &t->req;
    if (prepare(s, req, EDGE_HOOK_LOG, 0) != LUA_OK) {
        task_free(req);
        return;
    }
    edge_lua_ctx *ctx = &req->lua;
    ctx->done = task_done;
    start_budget(s, ctx, ctx->co);
    lua_pushcfunction(ctx->co, run_log);
    lua_rawgeti(ctx->co, LUA_REGISTRYINDEX, s->hook_ref[EDGE_HOOK_LOG]);
    lua_rawgeti(ctx->co, LUA_REGISTRYINDEX, ctx->ud_ref);
    ev_timer_init(&ctx->timer, on_log_start, 0., 0.);   /* after the response's write */
    ev_timer_start(s->loop, &ctx->timer);
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

/* Anchors the optional hook name of the module table on top of the stack. */
static int take_hook(edge_script *s, const char *path, enum edge_hook h, const char *name, char *err, size_t errlen)
{
    lua_State *L = s->L;
    int t = lua_getfield(L, -1, name);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return EDGE_OK;
    }
    if (t != LUA_TFUNCTION) {
        snprintf(err, errlen, "%s: hook '%s' must be a function or nil, got %s", path, name, luaL_typename(L, -1));
        return EDGE_ERROR;
    }
    s->hook_ref[h] = luaL_ref(L, LUA_REGISTRYINDEX);
    return EDGE_OK;
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
    lua_pop(L, 1);
    for (int h = 0; h < EDGE_HOOK_COUNT; h++)
        if (take_hook(s, path, (enum edge_hook)h, hook_names[h], err, errlen) != EDGE_OK) return EDGE_ERROR;
    return EDGE_OK;
}

int edge_script_open(edge_script *s, const char *path, long budget, struct ev_loop *loop,
                     int worker_id, struct edge_cache *cache, double cache_ttl, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->budget = budget;
    s->loop = loop;
    for (int h = 0; h < EDGE_HOOK_COUNT; h++) s->hook_ref[h] = LUA_NOREF;
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
    edge_lua_thread_clear_main(L);
    luaL_openlibs(L);
    install_budgeted_create(L);
    edge_lua_install_coroutines(L);         /* resume, wrap (on the budgeted create), close */
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
