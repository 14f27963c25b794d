/* edge.timer in the server (see lua_timer.h). */
#include "lua_timer.h"
#include "common.h"
#include "log.h"
#include "script.h"
#include "worker.h"

#include <stdlib.h>

typedef struct timer_vm timer_vm;
typedef struct run_guard run_guard;

typedef struct edge_lua_timer {
    ev_timer   ev;
    timer_vm  *vm;
    struct edge_lua_timer *prev, *next;
    run_guard *guard;          /* the run going on, or NULL */
    int        ref;            /* registry: { fn, arg1, ..., argN } */
    int        nargs;          /* N: the table may hold nils */
    double     delay, interval;   /* interval 0: an at() timer */
    unsigned   pending : 1;    /* in vm->pending; else in vm->done, still running */
} edge_lua_timer;

/* A VM's timers: a userdata in its registry, so that closing the VM frees
 * them (its __gc) whoever closes it. */
struct timer_vm {
    edge_script *s;
    struct edge_worker *w;     /* NULL until the worker runs the VM */
    edge_lua_timer *pending;   /* armed, or waiting for the worker to start */
    edge_lua_timer *done;      /* fired at() timers whose run still goes on */
    int n_pending, n_running, max;
    const char *closed;        /* why new timers are refused, or NULL */
};

/* The to-be-closed value of a run: its __close (and, should the coroutine
 * be dropped without being closed, its __gc) says the run ended. */
struct run_guard {
    edge_lua_timer *t;         /* NULL once told */
};

static const char VM_KEY = 0;        /* registry[&VM_KEY]: the timer_vm */
static const char WRAPPER_KEY = 0;   /* registry[&WRAPPER_KEY]: the wrapper below */
#define GUARD_MT "edge.timer.run"

/* Runs fn(...) with the guard as a to-be-closed variable: closed when fn
 * returns, fails and the task's coroutine is closed, or the task is
 * cancelled. A return in a to-be-closed scope is not a tail call, so the
 * guard stays in scope for all of fn. */
static const char WRAPPER[] =
    "return function(guard, fn, ...)\n"
    "  local _ <close> = guard\n"
    "  return fn(...)\n"
    "end\n";

static int max_timers = EDGE_LUA_TIMER_DEFAULT_MAX;

void edge_lua_timer_set_max(int max)
{
    max_timers = max;
}

/* ---- the lists ---- */

static edge_lua_timer **list_of(timer_vm *vm, const edge_lua_timer *t)
{
    return t->pending ? &vm->pending : &vm->done;
}

static void link_timer(timer_vm *vm, edge_lua_timer *t)
{
    edge_lua_timer **head = list_of(vm, t);
    t->prev = NULL;
    t->next = *head;
    if (*head) (*head)->prev = t;
    *head = t;
}

static void unlink_timer(timer_vm *vm, edge_lua_timer *t)
{
    if (t->prev) t->prev->next = t->next;
    else *list_of(vm, t) = t->next;
    if (t->next) t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

/* Moves a pending timer to the done list: it will not fire again. */
static void unpend(timer_vm *vm, edge_lua_timer *t)
{
    if (vm->s->loop) ev_timer_stop(vm->s->loop, &t->ev);
    unlink_timer(vm, t);
    t->pending = 0;
    vm->n_pending--;
    link_timer(vm, t);
}

/* Frees a timer that is neither pending nor running. */
static void free_timer(timer_vm *vm, edge_lua_timer *t, lua_State *L)
{
    unlink_timer(vm, t);
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    free(t);
}

static void on_expire(struct ev_loop *loop, ev_timer *ev, int revents);

static void arm(timer_vm *vm, edge_lua_timer *t)
{
    ev_timer_init(&t->ev, on_expire, t->delay, t->interval);
    ev_timer_start(vm->s->loop, &t->ev);
}

/* ---- a run ---- */

/* The run of t ended (the guard was closed or collected). */
static void run_ended(run_guard *g, lua_State *L)
{
    edge_lua_timer *t = g->t;
    g->t = NULL;
    t->guard = NULL;
    t->vm->n_running--;
    if (!t->pending) free_timer(t->vm, t, L);
}

static int guard_close(lua_State *L)
{
    run_guard *g = lua_touserdata(L, 1);
    if (g && g->t) run_ended(g, L);
    return 0;
}

/* Under lua_pcall (1: the timer, 2: premature): pushes the wrapper, a new
 * guard, fn, premature and the timer's arguments. */
static int push_run(lua_State *L)
{
    edge_lua_timer *t = lua_touserdata(L, 1);
    int premature = lua_toboolean(L, 2);
    lua_settop(L, 0);
    luaL_checkstack(L, t->nargs + 6, "too many timer arguments");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &WRAPPER_KEY);
    run_guard *g = lua_newuserdatauv(L, sizeof(*g), 0);
    g->t = NULL;                       /* attached once everything is pushed */
    luaL_setmetatable(L, GUARD_MT);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    lua_rawgeti(L, -1, 1);             /* fn */
    lua_replace(L, -2);
    lua_pushboolean(L, premature);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    for (int i = 1; i <= t->nargs; i++) lua_rawgeti(L, 5, i + 1);
    lua_remove(L, 5);
    return lua_gettop(L);
}

/* Runs fn(premature, ...) as a task. t stays allocated until the run ends
 * (and, for every(), until the timer ends too). */
static void run(timer_vm *vm, edge_lua_timer *t, int premature)
{
    lua_State *L = vm->s->L;
    int base = lua_gettop(L);
    lua_pushcfunction(L, push_run);
    lua_pushlightuserdata(L, t);
    lua_pushboolean(L, premature);
    if (vm->w == NULL || lua_pcall(L, 2, LUA_MULTRET, 0) != LUA_OK) {
        edge_log(EDGE_LOG_ERR, 0, "lua error in timer: not run: %s", vm->w ? "not enough memory" :
                 "no worker runs this script");
        lua_settop(L, base);
        if (!t->pending) free_timer(vm, t, L);
        return;
    }
    run_guard *g = lua_touserdata(L, base + 2);
    g->t = t;
    t->guard = g;
    vm->n_running++;
    edge_script_spawn(vm->s, vm->w, lua_gettop(L) - base - 1, "timer");
}

static void on_expire(struct ev_loop *loop, ev_timer *ev, int revents)
{
    edge_lua_timer *t = edge_container_of(ev, edge_lua_timer, ev);
    timer_vm *vm = t->vm;
    if (t->interval == 0) unpend(vm, t);
    else if (t->guard) {               /* every(): the previous run still goes on */
        edge_log(EDGE_LOG_DEBUG, 0, "edge.timer.every: tick skipped, the previous run is still going");
        return;
    }
    run(vm, t, 0);
}

/* ---- the Lua API ---- */

static int add(lua_State *L, int every)
{
    double d = edge_lua_timer_check_args(L, every);
    timer_vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    const char *refused = vm->closed ? vm->closed : vm->n_pending >= vm->max ? EDGE_LUA_TIMER_TOO_MANY : NULL;
    if (refused) {
        lua_pushnil(L);
        lua_pushstring(L, refused);
        return 2;
    }
    int nargs;
    int ref = edge_lua_timer_anchor(L, &nargs);   /* the last step that may raise */
    edge_lua_timer *t = edge_calloc(1, sizeof(*t));
    *t = (edge_lua_timer){.vm = vm, .ref = ref, .nargs = nargs, .delay = d,
                          .interval = every ? d : 0, .pending = 1};
    link_timer(vm, t);
    vm->n_pending++;
    if (vm->w) arm(vm, t);
    lua_pushboolean(L, 1);
    return 1;
}

/* edge.timer.at(delay, fn, ...) -> true, or nil and why */
static int l_at(lua_State *L)
{
    return add(L, 0);
}

/* edge.timer.every(interval, fn, ...) -> true, or nil and why */
static int l_every(lua_State *L)
{
    return add(L, 1);
}

static int l_pending_count(lua_State *L)
{
    timer_vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, vm->n_pending);
    return 1;
}

static int l_running_count(lua_State *L)
{
    timer_vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, vm->n_running);
    return 1;
}

/* The VM closes: stop and free every timer. A run still referenced by a
 * guard is detached from it (the guard may be finalized after this). */
static int vm_gc(lua_State *L)
{
    timer_vm *vm = lua_touserdata(L, 1);
    edge_lua_timer *t, *next;
    for (t = vm->pending; t; t = next) {
        next = t->next;
        if (vm->s->loop) ev_timer_stop(vm->s->loop, &t->ev);
        if (t->guard) t->guard->t = NULL;
        free(t);
    }
    for (t = vm->done; t; t = next) {
        next = t->next;
        if (t->guard) t->guard->t = NULL;
        free(t);
    }
    vm->pending = vm->done = NULL;
    return 0;
}

/* Makes the VM's timer list, the guards' metatable and the wrapper. */
static timer_vm *open_vm(lua_State *L, edge_script *s)
{
    timer_vm *vm = lua_newuserdatauv(L, sizeof(*vm), 0);
    *vm = (timer_vm){.s = s, .max = max_timers};
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, vm_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &VM_KEY);
    luaL_newmetatable(L, GUARD_MT);
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    if (luaL_loadbufferx(L, WRAPPER, sizeof(WRAPPER) - 1, "=edge.timer", "t") != LUA_OK)
        lua_error(L);
    lua_call(L, 0, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &WRAPPER_KEY);
    return vm;
}

void edge_lua_timer_push(lua_State *L, void *ud)
{
    static const luaL_Reg funcs[] = {
        {"at", l_at}, {"every", l_every}, {"pending_count", l_pending_count},
        {"running_count", l_running_count}, {NULL, NULL}
    };
    timer_vm *vm = open_vm(L, ud);
    lua_createtable(L, 0, 4);
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, funcs, 1);
}

/* ---- the worker's side ---- */

static timer_vm *vm_of(edge_script *s)
{
    if (s == NULL || s->L == NULL) return NULL;
    lua_rawgetp(s->L, LUA_REGISTRYINDEX, &VM_KEY);
    timer_vm *vm = lua_touserdata(s->L, -1);
    lua_pop(s->L, 1);
    return vm;
}

void edge_lua_timer_start(edge_script *s, struct edge_worker *w)
{
    timer_vm *vm = vm_of(s);
    if (vm == NULL || vm->w) return;
    vm->w = w;
    ev_now_update(s->loop);            /* loading took time: count delays from now */
    for (edge_lua_timer *t = vm->pending; t; t = t->next) arm(vm, t);
}

/* Each run may end at once and free its timer, or a collected guard may
 * free a done timer: so take the list's head each time, never a saved next. */
void edge_lua_timer_expire_all(edge_script *s, const char *why)
{
    timer_vm *vm = vm_of(s);
    if (vm == NULL) return;
    vm->closed = why;
    edge_lua_timer *t;
    while ((t = vm->pending) != NULL) {
        unpend(vm, t);
        if (t->guard == NULL) run(vm, t, 1);   /* every(): a run still going is not doubled */
    }
}
