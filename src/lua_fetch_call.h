/* What edge.fetch and edge.proxy share (lua_fetch.c): the call's state, a
 * full userdata on the waiting coroutine's stack, and the start that parses
 * the URL and options, builds the request, starts it and waits. */
#ifndef EDGE_LUA_FETCH_CALL_H
#define EDGE_LUA_FETCH_CALL_H

#include <lua.h>

#include "buf.h"
#include "request.h"
#include "upstream_fetch.h"

#define EDGE_FETCH_CALL_SLOT 3        /* the call userdata's stack slot: 1 url, 2 opts */
#define EDGE_FETCH_HOST_MAX 256       /* a URL's host, at most, with its NUL */

struct edge_named_fetch;
struct edge_pipe;
typedef struct edge_fetch_call edge_fetch_call;

typedef struct edge_fetch_kind {
    const char *name;                 /* "edge.fetch", "edge.proxy" */
    unsigned    stream : 1;           /* report at the head; the body as a pipe */
    /* Writes the request (line, headers, body) into c->wire and sets r's
     * is_head/idempotent (and r->body for a streamed request body). opts is the options' stack index (0: none), given
     * the known options it holds (lua_fetch.c's O_* bits). */
    void (*build)(lua_State *L, edge_fetch_call *c, int opts, unsigned given, const char *path, size_t plen,
                  edge_fetch_request *r);
    lua_KFunction cont;               /* resumed: pushes the results */
} edge_fetch_kind;

struct edge_fetch_call {
    edge_fetch   *f;                  /* while in flight (a URL) */
    struct edge_named_fetch *nf;      /* while in flight (a named upstream) */
    edge_request *req;
    const edge_fetch_kind *kind;
    edge_buf      wire;
    edge_response resp;
    struct edge_pipe *pipe;           /* streaming: the body, until a response takes it */
    struct edge_pipe *body_pipe;      /* edge.proxy: the client's streamed request body, taken
                                       * from the request; closed (after the fetch) when the call ends */
    int           ok;
    char         *err;                /* on failure: the message (malloc'd) */
    /* the parsed URL; host points to the starting call's stack (valid while it runs) */
    char         *host;
    int           port;
    int           port_given;
    int           tls;
};

/* Stack: 1 url, 2 opts or nil. Pushes the call at EDGE_FETCH_CALL_SLOT,
 * starts the request and yields; kind->cont runs when it ends. */
int edge_lua_fetch_start(lua_State *L, edge_request *req, const edge_fetch_kind *kind);
/* Releases what the call holds (a fetch in flight is cancelled, a pipe closed). */
void edge_lua_fetch_call_free(edge_fetch_call *c);
/* Pushes opts[name] and returns 1 when present (raising unless of type), else 0. */
int edge_lua_fetch_opt(lua_State *L, int t, const char *name, int type, const char *what);

/* The options' headers table into b as "Name: value\r\n" lines (see lua_fetch.c). */
void edge_lua_fetch_headers(lua_State *L, int opts, edge_buf *b, int *has_host, edge_buf *names);

#endif
