/* Coroutines the script makes, able to wait in edge APIs: a wait inside
 * one yields the whole chain up to the hook's coroutine and resumes back
 * down into it (lua_coroutine.c). */
#ifndef EDGE_LUA_COROUTINE_H
#define EDGE_LUA_COROUTINE_H

#include <lua.h>

struct edge_script;

/* One nested resume in progress: parent resumed child (on the C stack). */
typedef struct edge_lua_nest {
    lua_State *parent;
    lua_State *child;
    struct edge_lua_nest *prev;
} edge_lua_nest;

/* Replaces coroutine.resume, coroutine.wrap and coroutine.close in the VM
 * (after script.c's budgeted coroutine.create). */
void edge_lua_install_coroutines(lua_State *L);
/* Zeroes the main thread's extra space, which new threads copy. */
void edge_lua_thread_clear_main(lua_State *L);

/* Marks (or unmarks) L as suspended in an edge wait. */
void edge_lua_thread_mark(lua_State *L, int waiting);
int  edge_lua_thread_waiting(lua_State *L);
/* Marks L as a hook run's own coroutine: coroutine.resume, wrap and close
 * refuse it (the script can reach it through coroutine.running). */
void edge_lua_thread_set_root(lua_State *L);
/* A run is cancelled while root waits: unmarks the chain of coroutines it
 * waits through and resets (closes) each of them, innermost first, so that
 * their <close> variables run and a coroutine the script kept is dead, not
 * stuck waiting. The root itself is the caller's to reset. */
void edge_lua_chain_close(lua_State *root);

/* Why L may not wait now (NULL: it may): every thread from L up to root
 * must be yieldable and linked by resumes in progress. */
const char *edge_lua_wait_refusal(struct edge_script *s, lua_State *L, lua_State *root);

#endif
