/* edge.fetch: the Lua binding of upstream_fetch.c.
 *
 * The call's state is a full userdata kept on the waiting coroutine's stack
 * (slot 3), so Lua frees it whatever happens; its __gc frees the buffers. The
 * fetch handle in it is cleared when the callback runs or the wait is
 * cancelled, so no path touches the other's memory after it is gone. */
#include "lua_fetch.h"
#include "body_pipe.h"
#include "lua_fetch_call.h"
#include "common.h"
#include "lua_req.h"
#include "lua_upstream.h"
#include "metrics.h"
#include "request.h"
#include "script.h"
#include "upstream_fetch.h"
#include "upstream_named.h"
#include "worker.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CALL_MT "edge.fetch.call"


/* Defaults (README, "Talking to backends"). */
#define DEFAULT_CONNECT_TIMEOUT 5.0
#define DEFAULT_SEND_TIMEOUT    60.0
#define DEFAULT_READ_TIMEOUT    60.0
#define DEFAULT_MAX_BODY        (1024 * 1024)
#define DEFAULT_POOL_SIZE       64
#define DEFAULT_IDLE_TIMEOUT    60.0
#define DEFAULT_MAX_REQUESTS    1000
#define MAX_RETRIES             10



/* ---- the call userdata ---- */

/* After the fetch (which borrows it) is done or cancelled: a body not sent
 * to its end makes the client's protocol discard the rest. */
static void close_body_pipe(edge_fetch_call *c)
{
    if (c->body_pipe == NULL) return;
    edge_pipe *p = c->body_pipe;
    c->body_pipe = NULL;
    edge_pipe_close(p);
}

void edge_lua_fetch_call_free(edge_fetch_call *c)
{
    free(c->err);
    c->err = NULL;
    if (c->pipe) edge_pipe_close(c->pipe);
    c->pipe = NULL;
    if (c->f) edge_fetch_cancel(c->f);
    if (c->nf) edge_named_cancel(c->nf);
    c->f = NULL;
    c->nf = NULL;
    close_body_pipe(c);
    edge_buf_free(&c->wire);
    edge_buf_free(&c->resp.data);
    edge_buf_free(&c->resp.body);
    free(c->resp.headers);
    memset(&c->resp, 0, sizeof(c->resp));
}

/* Only the call's metatable has this __gc: the argument is a edge_fetch_call. */
static int call_gc(lua_State *L)
{
    edge_lua_fetch_call_free(lua_touserdata(L, 1));
    return 0;
}

static const char call_mt_key = 0;     /* its address keys the metatable in the registry */

/* The metatable is found by a light userdata key (no string lookup: this
 * runs for every call). */
static edge_fetch_call *push_call(lua_State *L)
{
    edge_fetch_call *c = lua_newuserdatauv(L, sizeof(*c), 0);
    memset(c, 0, sizeof(*c));
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &call_mt_key) == LUA_TNIL) {
        lua_pop(L, 1);
        luaL_newmetatable(L, CALL_MT);
        lua_pushcfunction(L, call_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &call_mt_key);
    }
    lua_setmetatable(L, -2);
    return c;
}

/* ---- the URL ---- */

static int bad_url(lua_State *L, const char *url, const char *why)
{
    return luaL_error(L, "edge.fetch: bad URL '%s': %s (expected http://host[:port]/path or https://...)",
                      url, why);
}

static const char *parse_scheme(lua_State *L, edge_fetch_call *c, const char *url)
{
    if (strncasecmp(url, "http://", 7) == 0) {
        c->port = 80;
        return url + 7;
    }
    if (strncasecmp(url, "https://", 8) == 0) {
        c->tls = 1;
        c->port = 443;
        return url + 8;
    }
    bad_url(L, url, "the scheme must be http or https");
    return NULL;
}

/* host, [v6], host:port or [v6]:port, in [p, end). */
static void parse_authority(lua_State *L, edge_fetch_call *c, const char *url, const char *p, const char *end)
{
    const char *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (host_end == NULL) bad_url(L, url, "unclosed [");
        p = host_end + 1;
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (host_end == NULL) host_end = end;
        p = host_end;
    }
    if (host_end == host || (size_t)(host_end - host) >= EDGE_FETCH_HOST_MAX) bad_url(L, url, "no host, or too long");
    for (const char *q = host; q < host_end; q++)
        if (*q <= ' ' || *q == 0x7f || *q == '@' || *q == '/') bad_url(L, url, "bad character in the host");
    memcpy(c->host, host, (size_t)(host_end - host));
    c->host[host_end - host] = '\0';
    if (p < end) {
        if (*p != ':' || p + 1 == end || end - p > 6) bad_url(L, url, "bad port");
        int port = 0;
        for (const char *q = p + 1; q < end; q++) {
            if (*q < '0' || *q > '9') bad_url(L, url, "bad port");
            port = port * 10 + (*q - '0');
        }
        if (port < 1 || port > 65535) bad_url(L, url, "port out of range");
        c->port = port;
        c->port_given = 1;
    }
}

/* The Host header: host, [v6], with :port unless it is the scheme's. Made
 * here rather than kept in c: the call's userdata stays small (one per call). */
static void write_host(edge_buf *b, const edge_fetch_call *c)
{
    int v6 = strchr(c->host, ':') != NULL;
    edge_buf_append_str(b, v6 ? "Host: [" : "Host: ");
    edge_buf_append_str(b, c->host);
    if (v6) edge_buf_append(b, "]", 1);
    if (c->port != (c->tls ? 443 : 80)) {
        char port[8];               /* ":65535" */
        size_t i = sizeof(port);
        for (int v = c->port; v > 0 && i > 1; v /= 10) port[--i] = (char)('0' + v % 10);
        port[--i] = ':';
        edge_buf_append(b, port + i, sizeof(port) - i);
    }
    edge_buf_append(b, "\r\n", 2);
}

/* Parses url into c; returns the path and query to send ("/" when none),
 * without the fragment, and its length. */
static const char *parse_url(lua_State *L, edge_fetch_call *c, const char *url, size_t *plen)
{
    const char *p = parse_scheme(L, c, url);
    const char *end = p + strcspn(p, "/?#");
    parse_authority(L, c, url, p, end);
    const char *path = end;
    size_t n = strcspn(path, "#");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)path[i] <= ' ' || path[i] == 0x7f) bad_url(L, url, "space or control character in the path");
    *plen = n;
    return path;
}

/* ---- options ---- */

int edge_lua_fetch_opt(lua_State *L, int t, const char *name, int type, const char *what)
{
    if (t == 0) return 0;
    int got = lua_getfield(L, t, name);
    if (got == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (got != type)
        luaL_error(L, "edge.fetch: option %s must be %s, got %s", name, what, luaL_typename(L, -1));
    return 1;
}

static double opt_seconds(lua_State *L, int t, const char *name, double dflt)
{
    if (!edge_lua_fetch_opt(L, t, name, LUA_TNUMBER, "a number of seconds")) return dflt;
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(v > 0 && v <= 86400 * 365)) luaL_error(L, "edge.fetch: option %s must be > 0 seconds", name);
    return v;
}

static lua_Integer opt_int(lua_State *L, int t, const char *name, lua_Integer dflt, lua_Integer min, lua_Integer max)
{
    if (!edge_lua_fetch_opt(L, t, name, LUA_TNUMBER, "an integer")) return dflt;
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    lua_pop(L, 1);
    if (!isint || v < min || v > max)
        luaL_error(L, "edge.fetch: option %s must be an integer from %I to %I", name, min, max);
    return v;
}

/* The options a call gave, as bits: one pass over opts with lua_next
 * instead of a lua_getfield per possible option (most calls give one or
 * two). A table with a metatable may answer through __index: all bits. */
enum { O_TIMEOUT = 1, O_KEEPALIVE = 2, O_MAX_BODY = 4, O_RETRIES = 8, O_TLS = 16, O_METHOD = 32,
       O_BODY = 64, O_HEADERS = 128 };

static unsigned options_given(lua_State *L, int opts)
{
    static const struct { const char *name; size_t len; unsigned bit; } known[] = {
        {"timeout", 7, O_TIMEOUT}, {"keepalive", 9, O_KEEPALIVE}, {"max_body", 8, O_MAX_BODY},
        {"retries", 7, O_RETRIES}, {"tls", 3, O_TLS}, {"method", 6, O_METHOD}, {"body", 4, O_BODY},
        {"headers", 7, O_HEADERS}, {"connect_timeout", 15, O_TIMEOUT}, {"send_timeout", 12, O_TIMEOUT},
        {"read_timeout", 12, O_TIMEOUT}};
    if (opts == 0) return 0;
    if (lua_getmetatable(L, opts)) {
        lua_pop(L, 1);
        return ~0u;
    }
    unsigned bits = 0;
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) continue;
        size_t n;
        const char *k = lua_tolstring(L, -1, &n);
        for (size_t i = 0; i < EDGE_ARRAY_LEN(known); i++)
            if (n == known[i].len && memcmp(k, known[i].name, n) == 0) bits |= known[i].bit;
    }
    return bits;
}

/* opts when it holds one of the options in bits, else 0 (none to read). */
static int opts_with(int opts, unsigned given, unsigned bits)
{
    return given & bits ? opts : 0;
}

/* opts.timeout over *to (the defaults, or a named upstream's timeouts). */
static void read_timeouts(lua_State *L, int opts, edge_fetch_timeouts *to)
{
    if (opts == 0) return;
    int t = lua_getfield(L, opts, "timeout");
    if (t == LUA_TNUMBER) {
        double v = opt_seconds(L, opts, "timeout", 0);
        *to = (edge_fetch_timeouts){v, v, v};
    } else if (t == LUA_TTABLE) {
        int i = lua_gettop(L);
        to->connect = opt_seconds(L, i, "connect", to->connect);
        to->send = opt_seconds(L, i, "send", to->send);
        to->read = opt_seconds(L, i, "read", to->read);
    } else if (t != LUA_TNIL) {
        luaL_error(L, "edge.fetch: option timeout must be a number or { connect =, send =, read = }");
    }
    lua_pop(L, 1);
    /* nginx-style names (proxy_read_timeout): each wins over timeout */
    to->connect = opt_seconds(L, opts, "connect_timeout", to->connect);
    to->send = opt_seconds(L, opts, "send_timeout", to->send);
    to->read = opt_seconds(L, opts, "read_timeout", to->read);
}

static void read_keepalive(lua_State *L, int opts, edge_keepalive *ka)
{
    *ka = (edge_keepalive){DEFAULT_POOL_SIZE, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_REQUESTS};
    if (opts == 0) return;
    int t = lua_getfield(L, opts, "keepalive");
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        ka->size = 0;
    } else if (t == LUA_TTABLE) {
        int i = lua_gettop(L);
        ka->size = (int)opt_int(L, i, "size", ka->size, 0, 100000);
        ka->idle_timeout = opt_seconds(L, i, "idle_timeout", ka->idle_timeout);
        ka->max_requests = (int)opt_int(L, i, "max_requests", ka->max_requests, 1, 1 << 30);
    } else if (t != LUA_TNIL) {
        luaL_error(L, "edge.fetch: option keepalive must be false or { size =, idle_timeout =, max_requests = }");
    }
    lua_pop(L, 1);
}

/* tls = { verify = true, sni = nil, ca_file = nil }; strings stay on the
 * stack (anchored) until the fetch has copied them. */
static void read_tls(lua_State *L, int opts, edge_fetch_target *t)
{
    t->verify = 1;
    if (opts == 0 || lua_getfield(L, opts, "tls") == LUA_TNIL) {
        if (opts) lua_pop(L, 1);
        lua_pushnil(L);                     /* keeps the stack shape: the tls table's slot */
        return;
    }
    if (!lua_istable(L, -1)) luaL_error(L, "edge.fetch: option tls must be { verify =, sni =, ca_file = }");
    int i = lua_gettop(L);
    if (lua_getfield(L, i, "verify") != LUA_TNIL) {
        if (!lua_isboolean(L, -1)) luaL_error(L, "edge.fetch: option tls.verify must be a boolean");
        t->verify = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    if (edge_lua_fetch_opt(L, i, "sni", LUA_TSTRING, "a string")) {
        t->sni = lua_tostring(L, -1);
        lua_pop(L, 1);                      /* still referenced by the table */
    }
    if (edge_lua_fetch_opt(L, i, "ca_file", LUA_TSTRING, "a string")) {
        t->ca_file = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
}

/* ---- the request bytes ---- */

static int is_token(const char *s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!edge_http_is_tchar((unsigned char)s[i])) return 0;
    return 1;
}

static void check_value(lua_State *L, const char *name, const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
            luaL_error(L, "edge.fetch: header %s has a CR, LF or NUL in its value", name);
}

static void add_header(lua_State *L, edge_buf *b, const char *name, size_t nlen, int vidx)
{
    size_t vlen;
    const char *v = lua_tolstring(L, vidx, &vlen);
    if (v == NULL) luaL_error(L, "edge.fetch: header %s must be a string or a list of strings", name);
    check_value(L, name, v, vlen);
    edge_buf_append(b, name, nlen);
    edge_buf_append(b, ": ", 2);
    edge_buf_append(b, v, vlen);
    edge_buf_append(b, "\r\n", 2);
}

/* Writes the script's headers, but Content-Length and Transfer-Encoding
 * (edge frames the body itself); sets *has_host when Host was given. With
 * names, each name given goes there too (lower-case, '\0'-terminated), and
 * a false value names a field without writing it (edge.proxy: removed). */
void edge_lua_fetch_headers(lua_State *L, int opts, edge_buf *b, int *has_host, edge_buf *names)
{
    if (!edge_lua_fetch_opt(L, opts, "headers", LUA_TTABLE, "a table")) return;
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        size_t nlen;
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "edge.fetch: header names must be strings");
        const char *name = lua_tolstring(L, -2, &nlen);
        if (!is_token(name, nlen)) luaL_error(L, "edge.fetch: bad header name '%s'", name);
        if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "transfer-encoding") == 0) {
            lua_pop(L, 1);
            continue;
        }
        if (strcasecmp(name, "host") == 0) *has_host = 1;
        if (names) {
            for (size_t i = 0; i < nlen; i++) {
                char ch = (char)tolower((unsigned char)name[i]);
                edge_buf_append(names, &ch, 1);
            }
            edge_buf_append(names, "", 1);
        }
        if (names && lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (lua_istable(L, -1)) {
            lua_Integer n = luaL_len(L, -1);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_geti(L, -1, i);
                add_header(L, b, name, nlen, -1);
                lua_pop(L, 1);
            }
        } else {
            add_header(L, b, name, nlen, -1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int method_is(const char *m, size_t n, const char *what)
{
    return n == strlen(what) && memcmp(m, what, n) == 0;
}

/* Request line, headers, body into c->wire; fills r's method flags. */
static void build_request(lua_State *L, edge_fetch_call *c, int opts, unsigned given, const char *path,
                          size_t plen, edge_fetch_request *r)
{
    opts = opts_with(opts, given, O_METHOD | O_BODY | O_HEADERS);
    size_t mlen = 3, blen = 0;
    const char *method = "GET", *body = NULL;
    if (edge_lua_fetch_opt(L, opts, "method", LUA_TSTRING, "a string")) {
        method = lua_tolstring(L, -1, &mlen);
        lua_pop(L, 1);
        if (!is_token(method, mlen)) luaL_error(L, "edge.fetch: bad method '%s'", method);
    }
    if (edge_lua_fetch_opt(L, opts, "body", LUA_TSTRING, "a string")) {
        body = lua_tolstring(L, -1, &blen);
        lua_pop(L, 1);
    }
    edge_buf *b = &c->wire;
    edge_buf_append(b, method, mlen);
    edge_buf_append(b, " ", 1);
    if (plen == 0 || path[0] == '?') edge_buf_append(b, "/", 1);
    edge_buf_append(b, path, plen);
    edge_buf_append_str(b, " HTTP/1.1\r\n");
    int has_host = 0;
    edge_lua_fetch_headers(L, opts, b, &has_host, NULL);
    if (!has_host) write_host(b, c);
    if (body || method_is(method, mlen, "POST") || method_is(method, mlen, "PUT") ||
        method_is(method, mlen, "PATCH"))
        edge_buf_printf(b, "Content-Length: %zu\r\n", blen);
    edge_buf_append(b, "\r\n", 2);
    if (body) edge_buf_append(b, body, blen);
    r->is_head = method_is(method, mlen, "HEAD");
    r->idempotent = edge_http_idempotent(method, mlen);
}

/* ---- waiting and the result ---- */

static void on_fetch_done(void *ud, edge_fetch_result *r)
{
    edge_fetch_call *c = ud;
    c->f = NULL;
    c->nf = NULL;
    edge_request *req = c->req;
    if (r->resp) {
        c->ok = 1;
        c->resp = *r->resp;
        memset(r->resp, 0, sizeof(*r->resp));
        c->pipe = r->pipe;          /* streaming: ours until the response takes it */
    } else {
        free(c->err);
        c->err = edge_strdup(r->err ? r->err : "failed");
    }
    edge_upstream_note *note = &req->upstream;
    note->used = 1;
    size_t alen = strnlen(r->peer, sizeof(note->addr) - 1);     /* as snprintf "%s", without printf */
    memcpy(note->addr, r->peer, alen);
    note->addr[alen] = '\0';
    note->status = c->ok ? c->resp.status : 0;
    note->seconds = r->seconds;
    edge_script_wake(req);
}

static void cancel_fetch(void *ud)
{
    edge_fetch_call *c = ud;
    if (c->f) edge_fetch_cancel(c->f);
    if (c->nf) edge_named_cancel(c->nf);
    c->f = NULL;
    c->nf = NULL;
    close_body_pipe(c);         /* now, not when the call is collected: the client waits on it */
}

/* Resumed: res = { status, headers, body }, or nil and the message. */
static int fetch_continue(lua_State *L, int status, lua_KContext kctx)
{
    edge_fetch_call *c = lua_touserdata(L, EDGE_FETCH_CALL_SLOT);      /* pushed by edge_lua_fetch: ours */
    if (!c->ok) {
        lua_pushnil(L);
        lua_pushstring(L, c->err);
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, c->resp.status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, c->resp.n_headers);
    int t = lua_gettop(L);
    for (int i = 0; i < c->resp.n_headers; i++) {
        const edge_header *h = &c->resp.headers[i];
        lua_pushlstring(L, c->resp.data.base + h->name.off, h->name.len);
        lua_pushlstring(L, c->resp.data.base + h->value.off, h->value.len);
        edge_lua_add_repeatable(L, t);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, c->resp.body.base ? c->resp.body.base : "", c->resp.body.len);
    lua_setfield(L, -2, "body");
    edge_pools_give_response(&c->req->worker->upstream_pools, &c->resp);   /* for the next fetch */
    edge_lua_fetch_call_free(c);
    return 1;
}

/* ---- named upstreams ---- */

/* Pushes hash_key(req)'s answer and returns it (NULL: not a string, so the
 * balancer falls back to round robin). An error in hash_key raises here, in
 * the caller of edge.fetch, like any error of the script's. */
static const char *hash_key(lua_State *L, edge_upstream *u, edge_request *req, size_t *len)
{
    if (u->def.balance != EDGE_BALANCE_HASH || u->hash_key_ref == LUA_NOREF || req->lua.ud == NULL) {
        lua_pushnil(L);
        return NULL;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->hash_key_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->lua.ud_ref);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) return NULL;
    return lua_tolstring(L, -1, len);
}

/* Options that belong to the upstream's definition, not to a call. */
static void refuse_option(lua_State *L, int opts, const char *name, const char *upstream)
{
    if (opts == 0) return;
    if (lua_getfield(L, opts, name) != LUA_TNIL)
        luaL_error(L, "edge.fetch: option %s is set by edge.upstream.define('%s'), not by a call", name, upstream);
    lua_pop(L, 1);
}

/* edge.fetch("http://NAME/path") where NAME is a defined upstream: like
 * nginx's proxy_pass http://NAME, the definition wins over DNS. */
static int fetch_named(lua_State *L, edge_fetch_call *c, edge_upstream *u, edge_request *req, const char *url,
                       int opts, const char *path, size_t plen)
{
    const edge_upstream_def *def = &u->def;
    if (c->tls != def->tls.enabled)
        luaL_error(L, "edge.fetch: upstream %s %s, so its URL is %s://%s/...", def->name,
                   def->tls.enabled ? "has tls" : "has no tls", def->tls.enabled ? "https" : "http", def->name);
    unsigned given = options_given(L, opts);
    refuse_option(L, opts_with(opts, given, O_TLS), "tls", def->name);
    refuse_option(L, opts_with(opts, given, O_KEEPALIVE), "keepalive", def->name);
    edge_named_request r = {.label = url};
    r.timeout = (edge_fetch_timeouts){def->timeout.connect, def->timeout.send, def->timeout.read};
    read_timeouts(L, opts_with(opts, given, O_TIMEOUT), &r.timeout);
    r.max_body = (size_t)opt_int(L, opts_with(opts, given, O_MAX_BODY), "max_body", DEFAULT_MAX_BODY, 0,
                                 (lua_Integer)1 << 40);
    r.tries = 1 + (unsigned)opt_int(L, opts_with(opts, given, O_RETRIES), "retries",
                                    (lua_Integer)def->retries.tries - 1, 0,
                                    EDGE_UPSTREAM_MAX_TRIES - 1);
    /* hash_key is the script's and may raise: before build, which may take
     * the request's streamed body (nothing would give it back then). */
    r.key = hash_key(L, u, req, &r.key_len);        /* stays on the stack until copied */
    edge_fetch_request fr = {0};
    c->kind->build(L, c, opts, given, path, plen, &fr);   /* fetch's Host: the upstream's name, as nginx's $proxy_host */
    r.is_head = fr.is_head;
    r.idempotent = fr.idempotent;
    r.stream = c->kind->stream;
    r.upgrade = fr.upgrade;
    r.body = fr.body;
    r.body_chunked = fr.body_chunked;
    r.wire = c->wire.base;
    r.wire_len = c->wire.len;
    c->nf = edge_named_fetch_start(req->worker, u, &r, on_fetch_done, c);
    edge_buf_free(&c->wire);
    lua_settop(L, EDGE_FETCH_CALL_SLOT);
    c->host = NULL;                                 /* the starting call's stack goes */
    return edge_script_wait(L, req, cancel_fetch, c, c->kind->cont);
}

int edge_lua_fetch_start(lua_State *L, edge_request *req, const edge_fetch_kind *kind)
{
    const char *url = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    int opts = lua_istable(L, 2) ? 2 : 0;
    edge_fetch_call *c = push_call(L);             /* slot 3 */
    char host[EDGE_FETCH_HOST_MAX];                /* the call's userdata stays small: one per call */
    c->host = host;
    c->req = req;
    c->kind = kind;
    size_t plen;
    const char *path = parse_url(L, c, url, &plen);

    edge_upstream *u = c->port_given ? NULL : edge_lua_upstream_find(L, c->host, strlen(c->host));
    if (u) return fetch_named(L, c, u, req, url, opts, path, plen);

    edge_fetch_request r = {.label = url};
    edge_fetch_target t = {.host = c->host, .port = c->port, .tls = c->tls};
    r.timeout = (edge_fetch_timeouts){DEFAULT_CONNECT_TIMEOUT, DEFAULT_SEND_TIMEOUT, DEFAULT_READ_TIMEOUT};
    unsigned given = options_given(L, opts);
    read_timeouts(L, opts_with(opts, given, O_TIMEOUT), &r.timeout);
    read_keepalive(L, opts_with(opts, given, O_KEEPALIVE), &t.keepalive);
    r.max_body = (size_t)opt_int(L, opts_with(opts, given, O_MAX_BODY), "max_body", DEFAULT_MAX_BODY, 0,
                                 (lua_Integer)1 << 40);
    r.retries = (int)opt_int(L, opts_with(opts, given, O_RETRIES), "retries", 0, 0, MAX_RETRIES);
    read_tls(L, opts_with(opts, given, O_TLS), &t);
    kind->build(L, c, opts, given, path, plen, &r);
    r.stream = kind->stream;   /* r.upgrade: set by build (edge.proxy) */
    r.wire = c->wire.base;
    r.wire_len = c->wire.len;
    c->f = edge_upstream_fetch(req->worker, &t, &r, on_fetch_done, c);
    edge_buf_free(&c->wire);
    lua_settop(L, EDGE_FETCH_CALL_SLOT);
    c->host = NULL;
    return edge_script_wait(L, req, cancel_fetch, c, kind->cont);
}

static const edge_fetch_kind fetch_kind = {.name = "edge.fetch", .build = build_request, .cont = fetch_continue};

int edge_lua_fetch(lua_State *L, void *ud)
{
    edge_request *req = edge_script_waitable(L, ud, "edge.fetch");
    return edge_lua_fetch_start(L, req, &fetch_kind);
}
