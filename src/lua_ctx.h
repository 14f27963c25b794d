/* A request's Lua state: its coroutine, its req userdata and the watcher it
 * waits on. Embedded in edge_request; owned by script.c. */
#ifndef EDGE_LUA_CTX_H
#define EDGE_LUA_CTX_H

#include <ev.h>
#include <lua.h>

struct edge_script;
struct edge_lua_req;

enum edge_lua_wait {
    EDGE_LUA_IDLE = 0,    /* no coroutine, nothing pending */
    EDGE_LUA_RUNNING,     /* inside lua_resume */
    EDGE_LUA_WAITING      /* yielded in an edge API (edge.sleep, edge.fetch); cancel is set */
};

/* Withdraws what a waiting coroutine waits for (stops edge.sleep's timer,
 * aborts edge.fetch's request), so that it never calls back. */
typedef void (*edge_lua_cancel_fn)(void *ud);

struct edge_request;

typedef struct edge_lua_ctx {
    struct edge_script *script;   /* the VM this request runs in */
    lua_State *co;                /* the running hook's coroutine (from the VM's pool), NULL when none */
    int        co_ref;            /* registry anchor of co */
    int        hook;              /* enum edge_hook of the run in co */
    void     (*done)(struct edge_request *req, int rc);   /* called when a run that waited ends */
    struct edge_request *task_next;   /* a task: its worker's list (script.c) */
    struct edge_request *task_prev;
    struct edge_lua_req *ud;      /* the req userdata; its pointer is cleared at release */
    int        ud_ref;            /* registry anchor of ud */
    ev_timer   timer;             /* edge.sleep */
    edge_lua_cancel_fn cancel;    /* while EDGE_LUA_WAITING: how to withdraw the wait */
    void      *cancel_ud;
    long       budget_left;       /* instructions the running hook may still hand out to its
                                   * threads (script.c: the instruction budget) */
    enum edge_lua_wait state;
    struct edge_pipe *lent_pipes; /* edge.proxy bodies Lua holds, closed at release (body_pipe.h) */
} edge_lua_ctx;

#endif
