/* `require "edge"` outside the server (busted unit specs): the same module C,
 * with a runtime where edge.sleep advances a virtual clock instead of waiting,
 * so timing logic in scripts is testable instantly. edge.now() reads that clock.
 *
 * The clock counts whole nanoseconds from 0 (1970-01-01), so sleeps and
 * advances add up exactly (a hundred edge.sleep(0.01) make 1.0, not
 * 1.0000000000000007) and a reading is the double nearest the decimal time:
 * edge.sleep(0.01) from 0 reads 0.01. It does not start at the wall-clock
 * time: near 1.7e9 s a double's step is 2.4e-7 s, and edge.sleep(0.01) then
 * moved edge.now() by 0.0099999905. A spec that needs a date sets one.
 *
 * edge.fetch is the server's (lua_fetch.c, upstream_fetch.c: the same
 * argument checks, client, pools and resolver) on a private ev loop that the
 * call runs until the response: it blocks the process, which is what a test
 * wants. Its timeouts are real time; the virtual clock does not move.
 *
 * edge.timer runs on the virtual clock: timers wait in a queue ordered by
 * due time (then creation), and fire in that order as the clock passes them
 * (clock.advance, edge.sleep), the clock reading each one's due time while it
 * runs. A timer's fn runs in a coroutine of its own, as in the server: an
 * edge.sleep there suspends it until the clock passes its wake-up time (a
 * queue entry too), so a sleeping timer never blocks the spec. An error in
 * fn is logged at error on stderr with a traceback and not raised into the
 * spec (as the server logs it and goes on); a spec that wants to see it
 * wraps fn in pcall. premature is always false: no worker stops here. */
#include "cache.h"
#include "lua_edge.h"
#include "lua_fetch.h"
#include "lua_timer.h"
#include "log.h"
#include "request.h"
#include "resolver.h"
#include "script.h"
#include "worker.h"

#include <lauxlib.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void run_due(lua_State *L, long long target);

/* Moves the clock forward by ns, running the timers it passes, or raises if
 * it would leave the range. */
static void advance_ns(lua_State *L, long long ns)
{
    if ((double)virtual_ns + (double)ns > CLOCK_MAX_SECONDS * 1e9)
        luaL_error(L, "the virtual clock would pass %f s", CLOCK_MAX_SECONDS);
    run_due(L, virtual_ns + ns);
}

/* edge._virtual_clock: what lua/edge/testing/clock.lua drives. */
static int l_clock_get(lua_State *L)
{
    lua_pushnumber(L, now_seconds());
    return 1;
}

static void vt_shift(long long delta_ns);

/* Setting the clock moves the pending timers with it: each keeps the time it
 * had left. Otherwise a spec that sets a date (clock.set(os.time())) would
 * leave an every() timer 1.7e9 s behind, to tick once per interval all the
 * way up at the next advance. */
static int l_clock_set(lua_State *L)
{
    long long ns = check_ns(L, 1);
    vt_shift(ns - virtual_ns);
    virtual_ns = ns;
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

static int timer_sleep(lua_State *L, long long ns);

/* seconds was checked by edge.sleep (0 to a year). In a timer's own
 * coroutine the timer waits; anywhere else the clock moves. */
static int module_sleep(lua_State *L, double seconds, void *ud)
{
    long long ns = llround(seconds * 1e9);
    if (timer_sleep(L, ns)) return lua_yield(L, 0);
    advance_ns(L, ns);
    return 0;
}

static void module_log(lua_State *L, int level, const char *where, const char *msg, void *ud)
{
    edge_log_write(level, 0, "[lua] %s%s", where, msg);
}

/* ---- edge.fetch on a private loop ----
 *
 * lua_fetch.c asks the script for the waiting request (edge_script_waitable),
 * waits (edge_script_wait) and is woken by the fetch's callback
 * (edge_script_wake). Here those run the module's loop in place until the
 * wake, then call the continuation directly: nothing yields, so edge.fetch
 * works anywhere in a spec (a coroutine, a hook called directly). The worker
 * is made on the first fetch and kept for the process: its pools keep idle
 * connections between calls, as in the server. */

static edge_worker *fetch_worker;
static edge_request fetch_request;
static int fetch_woken;

/* The worker edge.fetch runs on, made on first use; raises if no loop. */
static edge_worker *module_worker(lua_State *L)
{
    if (fetch_worker) return fetch_worker;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (loop == NULL) luaL_error(L, "edge.fetch: cannot create an event loop");
    edge_worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        ev_loop_destroy(loop);
        luaL_error(L, "edge.fetch: out of memory");
    }
    w->loop = loop;
    edge_pools_init(&w->upstream_pools);
    char err[256];
    w->resolver = edge_resolver_new(loop, NULL, err, sizeof(err));
    if (w->resolver == NULL) edge_log_write(EDGE_LOG_WARN, 0, "edge.fetch: only IP literals: %s", err);
    /* A TLS origin that closes mid-write raises SIGPIPE (SSL writes with
     * write(2)); the server ignores it, and so does a test process unless
     * it chose otherwise. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
    fetch_worker = w;
    return w;
}

edge_request *edge_script_waitable(lua_State *L, edge_script *s, const char *what)
{
    memset(&fetch_request, 0, sizeof(fetch_request));
    fetch_request.worker = module_worker(L);
    /* The loop sat still while the spec ran: without this, the fetch's
     * timers would count from the last fetch and could fire at once. */
    ev_now_update(fetch_request.worker->loop);
    return &fetch_request;
}

/* Runs the loop until the fetch reports (its timeouts bound this), then
 * returns what the continuation returns, as a resumed call would. */
int edge_script_wait(lua_State *L, edge_request *req, edge_lua_cancel_fn cancel, void *ud, lua_KFunction k)
{
    fetch_woken = 0;
    while (!fetch_woken) ev_run(req->worker->loop, EVRUN_ONCE);
    return k(L, LUA_OK, 0);
}

void edge_script_wake(edge_request *req)
{
    fetch_woken = 1;
}

/* ---- edge.timer on the virtual clock ---- */

typedef struct vtimer {
    long long due_ns;
    long long interval_ns;     /* every(); 0: at(), or a wake-up */
    unsigned long long seq;    /* creation order: breaks ties in due time */
    int ref;                   /* registry: { fn, args... }, or a wake-up's coroutine */
    int nargs;
    int owner;                 /* every(): its id; a wake-up: its timer's id (0: an at()) */
    unsigned wake : 1;         /* resumes a timer's sleeping coroutine */
    unsigned running : 1;      /* every(): its run is asleep, so ticks are skipped */
} vtimer;

static vtimer *vt_queue;       /* unordered: fired by a scan for the earliest */
static int vt_len, vt_cap, vt_pending, vt_running, vt_ids;
static unsigned long long vt_seq;
static lua_State *vt_current;  /* the timer coroutine running now, or NULL */
static long long vt_wake_ns;   /* set by edge.sleep when it suspends vt_current */

static void vt_push(lua_State *L, vtimer e)
{
    if (vt_len == vt_cap) {
        int cap = vt_cap ? vt_cap * 2 : 64;
        vtimer *q = realloc(vt_queue, (size_t)cap * sizeof(*q));
        if (q == NULL) luaL_error(L, "edge.timer: out of memory");
        vt_queue = q;
        vt_cap = cap;
    }
    e.seq = ++vt_seq;
    vt_queue[vt_len++] = e;
}

static vtimer vt_take(int i)
{
    vtimer e = vt_queue[i];
    vt_queue[i] = vt_queue[--vt_len];
    return e;
}

static void vt_shift(long long delta_ns)
{
    for (int i = 0; i < vt_len; i++) vt_queue[i].due_ns += delta_ns;
}

/* The earliest entry due at or before target, or -1. */
static int vt_next(long long target)
{
    int best = -1;
    for (int i = 0; i < vt_len; i++) {
        const vtimer *e = &vt_queue[i];
        if (e->due_ns > target) continue;
        if (best < 0 || e->due_ns < vt_queue[best].due_ns ||
            (e->due_ns == vt_queue[best].due_ns && e->seq < vt_queue[best].seq))
            best = i;
    }
    return best;
}

static vtimer *vt_find_every(int id)
{
    for (int i = 0; i < vt_len; i++)
        if (!vt_queue[i].wake && vt_queue[i].owner == id) return &vt_queue[i];
    return NULL;
}

static int timer_sleep(lua_State *L, long long ns)
{
    if (L != vt_current || !lua_isyieldable(L)) return 0;
    vt_wake_ns = virtual_ns + ns;
    return 1;
}

/* The run of owner's fn ended: its every() may tick again. */
static void vt_run_ended(lua_State *L, int co_ref, int owner)
{
    luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
    vt_running--;
    vtimer *e = owner ? vt_find_every(owner) : NULL;
    if (e) e->running = 0;
}

/* Resumes a timer's coroutine (anchored at co_ref) with nargs values on it,
 * and files what came of it: a wake-up when it slept, a log line when it
 * failed. */
static void vt_resume(lua_State *L, lua_State *co, int co_ref, int owner, int nargs)
{
    lua_State *outer = vt_current;
    vt_current = co;
    vt_wake_ns = -1;
    int nres, rc = lua_resume(co, L, nargs, &nres);
    vt_current = outer;
    if (rc == LUA_YIELD && vt_wake_ns >= 0) {
        vt_push(L, (vtimer){.due_ns = vt_wake_ns, .ref = co_ref, .owner = owner, .wake = 1});
        return;
    }
    if (rc == LUA_YIELD) {
        edge_log_write(EDGE_LOG_ERR, 0, "lua error in timer: it yielded outside an edge API call "
                       "(coroutine.yield in a timer is not allowed)");
    } else if (rc != LUA_OK) {
        const char *msg = lua_tostring(co, -1);
        luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
        edge_log_write(EDGE_LOG_ERR, 0, "lua error in timer: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_resetthread(co);               /* its to-be-closed variables run */
    vt_run_ended(L, co_ref, owner);
}

/* Starts a run of timer e: fn(false, args...) in a new coroutine. */
static void vt_start(lua_State *L, const vtimer *e)
{
    luaL_checkstack(L, 2, NULL);
    lua_State *co = lua_newthread(L);
    int co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_checkstack(co, e->nargs + 3, "too many timer arguments");
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
    lua_rawgeti(L, -1, 1);
    lua_xmove(L, co, 1);
    lua_pushboolean(co, 0);
    for (int i = 1; i <= e->nargs; i++) {
        lua_rawgeti(L, -1, i + 1);
        lua_xmove(L, co, 1);
    }
    lua_pop(L, 1);
    vt_running++;
    vt_resume(L, co, co_ref, e->interval_ns ? e->owner : 0, e->nargs + 1);
}

/* Fires the entry at i, whose time has come (the clock reads it). */
static void vt_fire(lua_State *L, int i)
{
    vtimer *q = &vt_queue[i];
    if (q->wake) {
        vtimer e = vt_take(i);
        lua_rawgeti(L, LUA_REGISTRYINDEX, e.ref);
        vt_resume(L, lua_tothread(L, -1), e.ref, e.owner, 0);
        lua_pop(L, 1);
    } else if (q->interval_ns == 0) {
        vtimer e = vt_take(i);
        vt_pending--;
        vt_start(L, &e);
        luaL_unref(L, LUA_REGISTRYINDEX, e.ref);
    } else {
        q->due_ns += q->interval_ns;   /* the next tick, keeping the cadence */
        q->seq = ++vt_seq;
        if (q->running) return;        /* its previous run still sleeps: skip this tick */
        q->running = 1;
        vtimer e = *q;                 /* the queue may move while it runs */
        vt_start(L, &e);
    }
}

/* Runs every entry due up to target in time order, the clock at each one's
 * time, then sets the clock to target (or leaves it later: a nested sleep
 * outside a timer coroutine may have moved it past). */
static void run_due(lua_State *L, long long target)
{
    int i;
    while ((i = vt_next(target)) >= 0) {
        if (vt_queue[i].due_ns > virtual_ns) virtual_ns = vt_queue[i].due_ns;
        vt_fire(L, i);
    }
    if (virtual_ns < target) virtual_ns = target;
}

static int vt_add(lua_State *L, int every)
{
    long long ns = llround(edge_lua_timer_check_args(L, every) * 1e9);
    if (vt_pending >= EDGE_LUA_TIMER_DEFAULT_MAX) {
        lua_pushnil(L);
        lua_pushliteral(L, EDGE_LUA_TIMER_TOO_MANY);
        return 2;
    }
    int nargs;
    int ref = edge_lua_timer_anchor(L, &nargs);
    vt_push(L, (vtimer){.due_ns = virtual_ns + ns, .interval_ns = every ? ns : 0, .ref = ref,
                        .nargs = nargs, .owner = every ? ++vt_ids : 0});
    vt_pending++;
    lua_pushboolean(L, 1);
    return 1;
}

static int l_vt_at(lua_State *L)
{
    return vt_add(L, 0);
}

static int l_vt_every(lua_State *L)
{
    return vt_add(L, 1);
}

static int l_vt_pending_count(lua_State *L)
{
    lua_pushinteger(L, vt_pending);
    return 1;
}

static int l_vt_running_count(lua_State *L)
{
    lua_pushinteger(L, vt_running);
    return 1;
}

static void module_push_timer(lua_State *L, void *ud)
{
    static const luaL_Reg funcs[] = {
        {"at", l_vt_at}, {"every", l_vt_every}, {"pending_count", l_vt_pending_count},
        {"running_count", l_vt_running_count}, {NULL, NULL}
    };
    luaL_newlib(L, funcs);
}

/* One cache per process, like the server's, with the server's default bound. */
static edge_lua_runtime module_runtime = {
    .now = module_now, .sleep = module_sleep, .fetch = edge_lua_fetch, .log = module_log,
    .push_timer = module_push_timer, .ud = NULL,
    .worker_id = 0, .cache = NULL, .cache_ttl = 60
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
