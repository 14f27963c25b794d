/* Coroutines the script makes, able to wait in edge APIs ("yield anywhere").
 *
 * A hook runs in a coroutine of its own (the root). When edge.sleep or
 * edge.fetch is called in a coroutine the script made, that coroutine yields
 * (edge_script_wait) and is marked as waiting; our coroutine.resume sees the
 * mark and yields its own caller in turn, marked too, up to the root, whose
 * resume (script.c) returns to the loop. When the wait ends the root is
 * resumed; each marked resume continues (resume_k), resuming its child with
 * what it was given, down to the API's continuation. OpenResty does the same
 * with its own coroutine.resume.
 *
 * The mark lives in the thread's extra space (LUA_EXTRASPACE), so a marked
 * coroutine is never resumed, wrapped or closed by anything but the chain
 * that waits. Which coroutine resumed which is kept on the C stack
 * (edge_lua_nest, linked from the script) while a resume runs, so that an API
 * can refuse to wait when some thread of the chain cannot yield (a C function
 * without a continuation in between). */
#include "lua_coroutine.h"
#include "script.h"

#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

/* A thread's extra space holds one word:
 * - bit 0: the thread is a hook run's own coroutine (script.c's pool), which
 *   the script may see (coroutine.running) but never resume, wrap or close;
 * - the rest: 0 when it does not wait; the address of waiting_mark when it
 *   waits in an edge API itself; the child it resumed when it waits because
 *   that child does (so a cancel can walk the chain down). */
static char waiting_mark;

#define ROOT_BIT ((uintptr_t)1)

static uintptr_t *word_of(lua_State *L)
{
    return (uintptr_t *)lua_getextraspace(L);
}

static void set_wait(lua_State *L, const void *what)
{
    uintptr_t *w = word_of(L);
    *w = (*w & ROOT_BIT) | (uintptr_t)what;
}

void edge_lua_thread_mark(lua_State *L, int waiting)
{
    set_wait(L, waiting ? &waiting_mark : NULL);
}

int edge_lua_thread_waiting(lua_State *L)
{
    return (*word_of(L) & ~ROOT_BIT) != 0;
}

void edge_lua_thread_set_root(lua_State *L)
{
    *word_of(L) |= ROOT_BIT;
}

static int is_root(lua_State *L)
{
    return (*word_of(L) & ROOT_BIT) != 0;
}

/* The child L waits through, or NULL (L waits itself, or not at all). */
static lua_State *waiting_child(lua_State *L)
{
    uintptr_t v = *word_of(L) & ~ROOT_BIT;
    return v && v != (uintptr_t)&waiting_mark ? (lua_State *)v : NULL;
}

void edge_lua_thread_clear_main(lua_State *L)
{
    memset(lua_getextraspace(L), 0, LUA_EXTRASPACE);   /* new threads copy the main thread's */
}

/* Deep enough for any chain: Lua refuses C calls nested past LUAI_MAXCCALLS (200). */
#define CHAIN_MAX 256

void edge_lua_chain_close(lua_State *root)
{
    lua_State *chain[CHAIN_MAX];
    int n = 0;
    for (lua_State *t = waiting_child(root); t && n < CHAIN_MAX; t = waiting_child(t)) chain[n++] = t;
    edge_lua_thread_mark(root, 0);
    while (n > 0) {                  /* innermost first: a <close> may use what its callers hold */
        lua_State *t = chain[--n];
        edge_lua_thread_mark(t, 0);
        lua_resetthread(t);
    }
}

static edge_script *script_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

const char *edge_lua_wait_refusal(edge_script *s, lua_State *L, lua_State *root)
{
    const edge_lua_nest *n = s->nest;
    for (;;) {
        if (!lua_isyieldable(L))
            return "a C function without a continuation is in between (a table.sort comparator, "
                   "a string.gsub callback, a __gc or a metamethod called from C)";
        if (L == root) return NULL;
        if (n == NULL || n->child != L) return "this coroutine was not resumed by the running hook";
        L = n->parent;
        n = n->prev;
    }
}

/* ---- resume, shared by coroutine.resume and coroutine.wrap ---- */

static int drive(lua_State *L, lua_State *co, int narg, lua_KContext wrap);

/* The chain is woken: this thread's child waits too, resume it with what
 * the root was given. */
static int resume_k(lua_State *L, int status, lua_KContext wrap)
{
    (void)status;
    edge_lua_thread_mark(L, 0);
    lua_State *co = lua_tothread(L, wrap ? lua_upvalueindex(1) : 1);
    int narg = lua_gettop(L) - (wrap ? 0 : 1);
    edge_lua_thread_mark(co, 0);        /* the chain's own resume: not refused */
    return drive(L, co, narg, wrap);
}

/* What coroutine.resume returns (true, values / false, error) or what
 * coroutine.wrap's function returns or raises. */
static int finish(lua_State *L, lua_State *co, int status, int nres, lua_KContext wrap)
{
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            return luaL_error(L, "too many results to resume");
        }
        if (!wrap) lua_pushboolean(L, 1);
        lua_xmove(co, L, nres);
        return nres + (wrap ? 0 : 1);
    }
    lua_xmove(co, L, 1);                /* the error object */
    if (!wrap) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_resetthread(co);                /* a dead wrapped coroutine: close its variables now */
    if (lua_type(L, -1) == LUA_TSTRING) {   /* as Lua's wrap: say where */
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int refuse(lua_State *L, lua_KContext wrap, const char *msg)
{
    if (wrap) return luaL_error(L, "%s", msg);
    lua_pushboolean(L, 0);
    lua_pushstring(L, msg);
    return 2;
}

/* Resumes co with the narg values on top of L. */
static int drive(lua_State *L, lua_State *co, int narg, lua_KContext wrap)
{
    if (is_root(co)) return refuse(L, wrap, "cannot resume a hook's own coroutine");
    if (edge_lua_thread_waiting(co))
        return refuse(L, wrap, "cannot resume a coroutine that waits in an edge call");
    if (lua_status(co) == LUA_OK && lua_gettop(co) == 0)
        return refuse(L, wrap, "cannot resume dead coroutine");
    if (!lua_checkstack(co, narg)) return refuse(L, wrap, "too many arguments to resume");
    lua_xmove(L, co, narg);
    edge_script *s = script_of(L);
    edge_lua_nest nest = {.parent = L, .child = co, .prev = s->nest};
    s->nest = &nest;
    int nres;
    int status = lua_resume(co, L, narg, &nres);
    s->nest = nest.prev;
    if (status == LUA_YIELD && edge_lua_thread_waiting(co)) {
        lua_pop(co, nres);              /* edge_script_wait yields no value */
        set_wait(L, co);                /* yieldable: edge_lua_wait_refusal checked the chain */
        return lua_yieldk(L, 0, wrap, resume_k);
    }
    return finish(L, co, status, nres, wrap);
}

static int co_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    return drive(L, co, lua_gettop(L) - 1, 0);
}

static int wrapped_call(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    return drive(L, co, lua_gettop(L), 1);
}

/* coroutine.wrap(f): coroutine.create's thread (upvalue 1: script.c's
 * budgeted create) in a function that resumes it through drive. */
static int co_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_pushcclosure(L, wrapped_call, 1);
    return 1;
}

/* coroutine.close(co): the library's (upvalue 1), unless co waits. */
static int co_close(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    if (co && is_root(co)) return luaL_error(L, "cannot close a hook's own coroutine");
    if (co && edge_lua_thread_waiting(co))
        return luaL_error(L, "cannot close a coroutine that waits in an edge call");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

void edge_lua_install_coroutines(lua_State *L)
{
    lua_getglobal(L, "coroutine");
    lua_pushcfunction(L, co_resume);
    lua_setfield(L, -2, "resume");
    lua_getfield(L, -1, "create");
    lua_pushcclosure(L, co_wrap, 1);
    lua_setfield(L, -2, "wrap");
    lua_getfield(L, -1, "close");
    lua_pushcclosure(L, co_close, 1);
    lua_setfield(L, -2, "close");
    lua_pop(L, 1);
}
