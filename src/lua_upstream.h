/* edge.upstream: named upstreams, defined at a script's top level.
 *
 *   edge.upstream.define(name, opts)   validates opts (every error at the
 *                                      caller's file:line), fills defaults
 *   edge.upstream.get(name)            a copy of the normalised options, or nil
 *   edge.upstream.names()              the defined names, sorted
 *
 * Upstreams belong to the VM (the registry of its lua_State): one set per
 * worker, rebuilt with the VM on reload; a request that still runs in an old
 * VM keeps that VM's upstreams, since the VM itself is refcounted. */
#ifndef EDGE_LUA_UPSTREAM_H
#define EDGE_LUA_UPSTREAM_H

#include <lua.h>
#include <stddef.h>

#include "balancer.h"

typedef struct edge_upstream {
    edge_upstream_def def;
    edge_balancer *balancer;    /* this worker's choice of server and passive health */
    int hash_key_ref;           /* registry reference of hash_key(req), or LUA_NOREF */
    int metrics_slot;           /* this worker's metrics slot for the name; 0 until first used */
    char where[128];            /* "app.lua:12:", where it was defined */
} edge_upstream;

/* Pushes a new `edge.upstream` table and starts L's set of upstreams empty
 * (edge_lua_push_module calls it once per module it makes). */
void edge_lua_upstream_open(lua_State *L);

/* Ends the time when edge.upstream.define may be called: script.c calls it
 * once the script has loaded, so a hook that calls define raises an error.
 * Allocates nothing, so it cannot raise. */
void edge_lua_upstream_seal(lua_State *L);

/* The upstream called name (len bytes) in L's VM, or NULL. It lives as long
 * as the VM; never free it. Like any Lua call that makes a string, it may
 * raise a memory error: call it where Lua errors are caught (edge.fetch). */
edge_upstream *edge_lua_upstream_find(lua_State *L, const char *name, size_t len);

/* Calls fn for each upstream of L's VM, in no particular order. */
void edge_lua_upstream_each(lua_State *L, void (*fn)(edge_upstream *u, void *ud), void *ud);

/* For lua_upstream.c: fills u->def (and u->hash_key_ref) from the options
 * table at index opts, or raises a Lua error at the caller's file:line
 * naming the upstream (name) and the option. What it stored before raising
 * is u's to free (the userdata's __gc does). */
void edge_lua_upstream_parse(lua_State *L, edge_upstream *u, const char *name, int opts);

#endif
