/* edge.proxy: the Lua side of the reverse proxy (lua_proxy.h). The request
 * bytes come from proxy_request.c, the exchange is edge.fetch's (lua_fetch.c,
 * upstream_fetch.c) in streaming mode, and the body reaches the client
 * through the pipe that res.body holds (lua_body_stream.h). */
#include "lua_proxy.h"
#include "body_pipe.h"
#include "cidr.h"
#include "common.h"
#include "log.h"
#include "lua_body_stream.h"
#include "lua_fetch_call.h"
#include "lua_req.h"
#include "proxy_request.h"
#include "revalidate.h"
#include "script.h"
#include "upstream_pool.h"
#include "worker.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* ---- the request ---- */

static const char *opt_string(lua_State *L, int opts, const char *name, size_t *len)
{
    if (!edge_lua_fetch_opt(L, opts, name, LUA_TSTRING, "a string")) return NULL;
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1);                   /* still referenced by opts */
    for (size_t i = 0; i < *len; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            luaL_error(L, "edge.proxy: option %s has a space or control character", name);
    return s;
}

static int opt_flag(lua_State *L, int opts, const char *name)
{
    if (!edge_lua_fetch_opt(L, opts, name, LUA_TBOOLEAN, "a boolean")) return 1;
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* opts.ws_idle_timeout: seconds without a byte either way before a
 * WebSocket tunnel closes; 0 when not given (tunnel.c then uses
 * --keepalive-timeout). */
static double ws_idle_timeout(lua_State *L, int opts)
{
    if (opts == 0 || !edge_lua_fetch_opt(L, opts, "ws_idle_timeout", LUA_TNUMBER, "a number")) return 0;
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(v > 0 && v <= 86400 * 365)) luaL_error(L, "edge.proxy: option ws_idle_timeout must be seconds > 0");
    return v;
}

static int sends_get_for_head(const edge_request *req)
{
    return req->is_head && req->has_cache_key;   /* the entry then answers GET and HEAD */
}

/* A request with a cache key: the client's conditionals stay with the
 * cache; an expired entry's validators go to the origin, which may then
 * answer 304 (revalidate.h). */
static void cache_conditionals(edge_request *req, edge_proxy_request_opts *o)
{
    if (!req->has_cache_key) return;
    o->cached = 1;
    const struct edge_cache_entry *e = req->dispatch.stale;
    if (e == NULL) return;
    o->if_none_match = edge_cache_entry_field(e, "etag", 4, &o->if_none_match_len);
    o->if_modified_since = edge_cache_entry_field(e, "last-modified", 13, &o->if_modified_since_len);
    if (o->if_none_match || o->if_modified_since) req->dispatch.conditional = 1;
}

/* kind->build: the client's request as proxy_request.c writes it, then its body. */
static void build_proxy(lua_State *L, edge_fetch_call *c, int opts, unsigned given, const char *path, size_t plen,
                        edge_fetch_request *r)
{
    edge_request *req = c->req;
    if (req->body_streamed && req->body_pipe == NULL)
        luaL_error(L, "edge.proxy: the request body was streamed (past --body-buffer) and is gone: "
                      "it can be proxied once");
    if (plen > 1 || (plen == 1 && path[0] != '/'))
        luaL_error(L, "edge.proxy: the target names the origin only (scheme://host[:port]); "
                      "use opts.path to send another path");
    edge_proxy_request_opts o = {.x_forwarded = 1, .via = 1};
    o.target = opt_string(L, opts, "path", &o.target_len);
    if (o.target && (o.target_len == 0 || o.target[0] != '/')) luaL_error(L, "edge.proxy: option path must start with /");
    o.host = opt_string(L, opts, "host", &o.host_len);
    o.x_forwarded = opt_flag(L, opts, "x_forwarded");
    o.via = opt_flag(L, opts, "via");
    const edge_cidr_list *trusted = &req->worker->cfg->trusted_proxies;
    o.peer_trusted = trusted->n > 0 && req->peer && edge_cidr_list_match(trusted, req->peer);
    if (edge_proxy_wants_upgrade(req)) {      /* WebSocket: a 101 opens a tunnel (tunnel.c) */
        o.keep_upgrade = 1;
        r->upgrade = 1;
        ws_idle_timeout(L, opts);            /* checked now: read again with the 101 */
    }
    cache_conditionals(req, &o);
    if (sends_get_for_head(req)) {
        o.method = "GET";
        o.method_len = 3;
    }
    edge_buf extra = {0}, drop = {0};
    int has_host = 0;
    edge_lua_fetch_headers(L, opts, &extra, &has_host, &drop);
    if (has_host) {                  /* the script's Host line is in extra */
        o.host = NULL;
        o.no_host = 1;
    }
    o.extra = &extra;
    o.drop = &drop;
    if (req->body_pipe) {            /* past --body-buffer: the rest streams from the client */
        o.streamed_body = 1;
        o.body_length = req->body_pipe->length;
    }
    edge_buf_reserve(&c->wire, 256 + req->data.len + extra.len + req->body.len);
    edge_proxy_build_request(req, &o, &c->wire);
    edge_buf_free(&extra);
    edge_buf_free(&drop);
    if (req->body_pipe) {            /* the call owns it now; nothing may raise after this */
        c->body_pipe = r->body = req->body_pipe;
        r->body_chunked = req->body_pipe->length < 0;
        req->body_pipe = NULL;
    } else if (req->body.len) {
        edge_buf_append(&c->wire, req->body.base, req->body.len);
    }
    const char *m = o.method ? o.method : edge_request_ptr(req, req->method);
    size_t mlen = o.method ? o.method_len : req->method.len;
    r->is_head = mlen == 4 && memcmp(m, "HEAD", 4) == 0;
    r->idempotent = edge_http_idempotent(m, mlen);
    (void)given;
}

/* ---- the response ---- */

/* res.headers: the origin's fields but the hop-by-hop ones, Server and Date. */
static void push_headers(lua_State *L, const edge_response *resp)
{
    const char *conn = NULL;
    size_t clen = 0;
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        if (h->name.len == 10 && memcmp(resp->data.base + h->name.off, "connection", 10) == 0) {
            conn = resp->data.base + h->value.off;
            clen = h->value.len;
        }
    }
    lua_createtable(L, 0, resp->n_headers);
    int t = lua_gettop(L);
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        const char *name = resp->data.base + h->name.off;
        if (edge_proxy_response_field_dropped(name, h->name.len, conn, clen)) continue;
        lua_pushlstring(L, name, h->name.len);
        lua_pushlstring(L, resp->data.base + h->value.off, h->value.len);
        edge_lua_add_repeatable(L, t);
    }
}

/* What a failed origin becomes: 504 for a timeout, else 502, with the
 * reason in res.error and in the error log (upstream, server, reason). */
static void push_failure(lua_State *L, edge_fetch_call *c, const char *target)
{
    edge_request *req = c->req;
    int status = strstr(c->err, "timeout") ? 504 : 502;
    edge_log(EDGE_LOG_ERR, req->conn_id, "request %s: edge.proxy to %s (server %s): %s: %d",
             edge_request_id(req), target, req->upstream.addr[0] ? req->upstream.addr : "none", c->err, status);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "text/plain");
    lua_setfield(L, -2, "content-type");
    lua_setfield(L, -2, "headers");
    lua_pushfstring(L, "%d %s\n", status, edge_http_reason(status));
    lua_setfield(L, -2, "body");
    lua_pushstring(L, c->err);
    lua_setfield(L, -2, "error");
}

static int after_on_response(lua_State *L, int status, lua_KContext k)
{
    (void)status;
    lua_pushvalue(L, (int)k);        /* res */
    return 1;
}

/* Resumed once the head is in (or the try failed): res, after on_response. */
static int proxy_continue(lua_State *L, int status, lua_KContext kctx)
{
    edge_fetch_call *c = lua_touserdata(L, EDGE_FETCH_CALL_SLOT);
    const char *target = lua_tostring(L, 1);
    if (!c->ok) {
        push_failure(L, c, target);
    } else {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, c->resp.status);
        lua_setfield(L, -2, "status");
        push_headers(L, &c->resp);
        lua_setfield(L, -2, "headers");
        c->pipe->get_for_head = sends_get_for_head(c->req);
        if (c->pipe->upgrade) c->pipe->upgrade_idle = ws_idle_timeout(L, lua_istable(L, 2) ? 2 : 0);
        edge_lua_body_stream_push(L, c->pipe, &c->req->lua.lent_pipes);
        c->pipe = NULL;              /* the stream userdata owns it now */
        lua_setfield(L, -2, "body");
        edge_pools_give_response(&c->req->worker->upstream_pools, &c->resp);   /* for the next exchange */
    }
    edge_lua_fetch_call_free(c);
    int res = lua_gettop(L);
    if (lua_istable(L, 2) && lua_getfield(L, 2, "on_response") != LUA_TNIL) {
        if (!lua_isfunction(L, -1)) luaL_error(L, "edge.proxy: option on_response must be a function");
        lua_pushvalue(L, res);
        lua_callk(L, 1, 0, res, after_on_response);
    }
    return after_on_response(L, LUA_OK, res);
}

static const edge_fetch_kind proxy_kind = {.name = "edge.proxy", .stream = 1, .build = build_proxy,
                                           .cont = proxy_continue};

int edge_lua_proxy(lua_State *L, void *ud)
{
    edge_request *req = edge_script_waitable(L, ud, "edge.proxy");
    if (!edge_lua_req_is(L, 1, req))
        return luaL_error(L, "edge.proxy: the first argument must be the request respond was given");
    lua_remove(L, 1);                /* target, opts: edge.fetch's shape */
    return edge_lua_fetch_start(L, req, &proxy_kind);
}
