/* The options of edge.upstream.define, checked and normalised into an
 * edge_upstream_def (balancer.h). Every mistake is a Lua error at define's
 * caller's file:line that names the upstream and the option: "app.lua:12:
 * edge.upstream.define('api'): servers[2].weight must be a positive integer
 * (at most 100), got -1". Nothing is parsed in the order a table iterates:
 * unknown keys first, then each option in a fixed order (tls before servers,
 * whose default port it sets). */
#include "lua_upstream.h"
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HOST_MAX_LEN = 253 };

#define YEAR_SECONDS 31536000.0

/* ---- errors ---- */

/* What define is parsing: the Lua state, the upstream's name, the result. */
typedef struct parse {
    lua_State *L;
    const char *name;
    edge_upstream *u;
} parse;

static int fail(parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Raises "file:line: edge.upstream.define('name'): message", where file:line
 * is define's caller (level 1: define is a C function, so parsing helpers
 * add no Lua level). */
static int fail(parse *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    luaL_where(p->L, 1);
    lua_pushfstring(p->L, "%sedge.upstream.define('%s'): %s", lua_tostring(p->L, -1), p->name, msg);
    return lua_error(p->L);
}

/* The value at idx for a message: numbers and booleans as written, strings
 * quoted (cut at 60 bytes), anything else by its type name. */
static const char *describe(lua_State *L, int idx, char *buf, size_t len)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) snprintf(buf, len, "%lld", (long long)lua_tointeger(L, idx));
        else snprintf(buf, len, "%.14g", lua_tonumber(L, idx));
        return buf;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        snprintf(buf, len, "'%.*s%s'", n > 60 ? 60 : (int)n, s, n > 60 ? "..." : "");
        return buf;
    }
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? "true" : "false";
    default:
        return luaL_typename(L, idx);
    }
}

static int bad_value(parse *p, const char *path, const char *rule, int idx)
{
    char buf[96];
    return fail(p, "%s must be %s, got %s", path, rule, describe(p->L, idx, buf, sizeof(buf)));
}

/* ---- typed fields: each reads t[key], returns 0 when it is nil ---- */

/* Every key of table t must be a name in known (NULL-terminated); table
 * entries of a list (integer keys) are allowed up to list_len. */
static void check_keys(parse *p, int t, const char *path, const char *const *known, lua_Integer list_len)
{
    lua_State *L = p->L;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= list_len) continue;
        char buf[96], list[256] = "";
        for (size_t i = 0; known[i]; i++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", known[i]);
        if (known[0] == NULL) fail(p, "%s must be a list; it has the key %s", path, describe(L, -1, buf, sizeof(buf)));
        if (lua_type(L, -1) != LUA_TSTRING)
            fail(p, "%s has an unexpected key %s (known: %s)", path ? path : "the options table",
                 describe(L, -1, buf, sizeof(buf)), list);
        const char *k = lua_tostring(L, -1);
        size_t i = 0;
        while (known[i] && strcmp(known[i], k) != 0) i++;
        if (known[i] == NULL)
            fail(p, "unknown option '%s%s%s' (known: %s)", path ? path : "", path ? "." : "", k, list);
    }
}

/* Pushes t[key]; returns its type. */
static int field(parse *p, int t, const char *key)
{
    return lua_getfield(p->L, t, key);
}

static void join(char *out, size_t len, const char *path, const char *key)
{
    snprintf(out, len, "%s%s%s", path ? path : "", path ? "." : "", key);
}

/* A number of seconds, > 0 and at most a year. */
static int get_seconds(parse *p, int t, const char *path, const char *key, double *out)
{
    char full[128];
    join(full, sizeof(full), path, key);
    int type = field(p, t, key);
    if (type == LUA_TNIL) return lua_pop(p->L, 1), 0;
    double v = lua_tonumber(p->L, -1);
    if (type != LUA_TNUMBER || !(v > 0 && v <= YEAR_SECONDS))
        bad_value(p, full, "a number of seconds > 0 (at most a year, 31536000)", -1);
    *out = v;
    lua_pop(p->L, 1);
    return 1;
}

static void int_rule(char *buf, size_t len, lua_Integer min, lua_Integer max)
{
    if (min == 1) snprintf(buf, len, "a positive integer (at most %lld)", (long long)max);
    else snprintf(buf, len, "an integer from %lld to %lld", (long long)min, (long long)max);
}

/* An integer from min to max (a float with an integer value counts). */
static int get_int(parse *p, int t, const char *path, const char *key, lua_Integer min, lua_Integer max,
                   unsigned *out)
{
    char full[128], rule[96];
    join(full, sizeof(full), path, key);
    int type = field(p, t, key);
    if (type == LUA_TNIL) return lua_pop(p->L, 1), 0;
    int isint = 0;
    lua_Integer v = type == LUA_TNUMBER ? lua_tointegerx(p->L, -1, &isint) : 0;
    if (!isint || v < min || v > max) {
        int_rule(rule, sizeof(rule), min, max);
        bad_value(p, full, rule, -1);
    }
    *out = (unsigned)v;
    lua_pop(p->L, 1);
    return 1;
}

static int get_bool(parse *p, int t, const char *path, const char *key, int *out)
{
    char full[128];
    join(full, sizeof(full), path, key);
    int type = field(p, t, key);
    if (type == LUA_TNIL) return lua_pop(p->L, 1), 0;
    if (type != LUA_TBOOLEAN) bad_value(p, full, "true or false", -1);
    *out = lua_toboolean(p->L, -1);
    lua_pop(p->L, 1);
    return 1;
}

/* A non-empty string of at most max bytes with no control character or
 * space; replaces *out (owned). */
static int get_string(parse *p, int t, const char *path, const char *key, size_t max, char **out)
{
    char full[128], rule[96];
    join(full, sizeof(full), path, key);
    int type = field(p, t, key);
    if (type == LUA_TNIL) return lua_pop(p->L, 1), 0;
    size_t n = 0;
    const char *s = type == LUA_TSTRING ? lua_tolstring(p->L, -1, &n) : NULL;
    int ok = s != NULL && n > 0 && n <= max;
    for (size_t i = 0; ok && i < n; i++) ok = (unsigned char)s[i] > ' ' && s[i] != 0x7f;
    if (!ok) {
        snprintf(rule, sizeof(rule), "a non-empty string without spaces (at most %zu bytes)", max);
        bad_value(p, full, rule, -1);
    }
    free(*out);
    *out = edge_strdup(s);
    lua_pop(p->L, 1);
    return 1;
}

/* Pushes t[key] when it is a table, or nothing when nil (returns 0); on
 * anything else raises "path must be a table". */
static int get_table(parse *p, int t, const char *path, const char *key)
{
    char full[128];
    join(full, sizeof(full), path, key);
    int type = field(p, t, key);
    if (type == LUA_TNIL) return lua_pop(p->L, 1), 0;
    if (type != LUA_TTABLE) bad_value(p, full, "a table", -1);
    return 1;
}

/* ---- servers ---- */

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

/* Splits "host:port", "[v6]:port", "host" or "[v6]" into host and port
 * (default_port when absent); returns NULL or what is wrong. */
static const char *split_address(const char *a, size_t n, char *host, uint16_t *port, uint16_t default_port)
{
    const char *colon, *h = a, *hend;
    if (n > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (close == NULL) return "no ']' after an IPv6 address";
        h = a + 1;
        hend = close;
        colon = close + 1 < a + n ? close + 1 : NULL;
        if (colon && *colon != ':') return "expected ':port' after ']'";
    } else {
        colon = memchr(a, ':', n);
        if (colon && memchr(colon + 1, ':', (size_t)(a + n - colon - 1)))
            return "an IPv6 address needs brackets: '[::1]:8080'";
        hend = colon ? colon : a + n;
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen > HOST_MAX_LEN) return "the host must be 1 to 253 characters";
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (a[0] == '[') {
        unsigned char buf[16];
        if (inet_pton(AF_INET6, host, buf) != 1) return "not an IPv6 address between the brackets";
    } else {
        for (size_t i = 0; i < hlen; i++)
            if (!host_char(host[i])) return "the host may hold only letters, digits, '.', '-' and '_'";
        if (host[0] == '-' || host[0] == '.') return "the host may not start with '-' or '.'";
    }
    *port = default_port;
    if (colon == NULL) return NULL;
    const char *ps = colon + 1, *pend = a + n;
    long v = 0;
    if (ps == pend || pend - ps > 5) return "the port must be a number from 1 to 65535";
    for (const char *c = ps; c < pend; c++) {
        if (*c < '0' || *c > '9') return "the port must be a number from 1 to 65535";
        v = v * 10 + (*c - '0');
    }
    if (v < 1 || v > 65535) return "the port must be a number from 1 to 65535";
    *port = (uint16_t)v;
    return NULL;
}

static const char SERVER_SHAPE[] = "\"host:port\" or { \"host:port\", weight = N, backup = true }";

/* servers[i] (on top of the stack) into def->servers[def->n_servers]. */
static void parse_server(parse *p, lua_Integer i, uint16_t default_port)
{
    lua_State *L = p->L;
    edge_upstream_def *def = &p->u->def;
    edge_upstream_server s = {.weight = 1};
    char path[32], host[HOST_MAX_LEN + 1], buf[96];
    snprintf(path, sizeof(path), "servers[%lld]", (long long)i);
    int t = lua_gettop(L);
    int is_table = lua_type(L, t) == LUA_TTABLE;
    if (is_table) {
        static const char *const known[] = {"weight", "backup", NULL};
        check_keys(p, t, path, known, 1);
        unsigned w = 1;
        int backup = 0;
        if (get_int(p, t, path, "weight", 1, EDGE_UPSTREAM_MAX_WEIGHT, &w)) s.weight = (uint16_t)w;
        if (get_bool(p, t, path, "backup", &backup)) s.backup = backup != 0;
        lua_rawgeti(L, t, 1);
    } else {
        lua_pushvalue(L, t);
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
        if (is_table) fail(p, "%s[1] must be the address \"host:port\", got %s", path, describe(L, -1, buf, sizeof(buf)));
        fail(p, "%s must be %s, got %s", path, SERVER_SHAPE, describe(L, -1, buf, sizeof(buf)));
    }
    size_t n;
    const char *a = lua_tolstring(L, -1, &n);
    const char *why = split_address(a, n, host, &s.port, default_port);
    if (why) fail(p, "%s: bad address %s: %s", path, describe(L, -1, buf, sizeof(buf)), why);
    for (size_t k = 0; k < def->n_servers; k++)
        if (def->servers[k].port == s.port && strcmp(def->servers[k].host, host) == 0)
            fail(p, "%s: %s is listed twice (servers[%zu]); give it a weight instead", path,
                 describe(L, -1, buf, sizeof(buf)), k + 1);
    lua_settop(L, t - 1);
    s.host = edge_strdup(host);
    def->servers[def->n_servers++] = s;     /* owned by def from here: no error in between */
}

static void parse_servers(parse *p, int opts)
{
    lua_State *L = p->L;
    int type = field(p, opts, "servers");
    if (type == LUA_TNIL) fail(p, "servers is required: a list of %s", SERVER_SHAPE);
    if (type != LUA_TTABLE) bad_value(p, "servers", "a list of servers", -1);
    int t = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    static const char *const none[] = {NULL};
    check_keys(p, t, "servers", none, n);
    if (n == 0) fail(p, "servers must list at least one server");
    if (n > EDGE_UPSTREAM_MAX_SERVERS)
        fail(p, "servers lists %lld servers; at most %d are allowed", (long long)n, EDGE_UPSTREAM_MAX_SERVERS);
    edge_upstream_def *def = &p->u->def;
    def->servers = edge_calloc((size_t)n, sizeof(*def->servers));
    uint16_t default_port = def->tls.enabled ? 443 : 80;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        parse_server(p, i, default_port);
    }
    lua_pop(L, 1);
}

/* ---- the other options ---- */

static void parse_balance(parse *p, int opts)
{
    edge_upstream_def *def = &p->u->def;
    int type = field(p, opts, "balance");
    if (type != LUA_TNIL) {
        const char *s = type == LUA_TSTRING ? lua_tostring(p->L, -1) : "";
        if (edge_upstream_balance_parse(s, &def->balance) != 0)
            bad_value(p, "balance", "'round_robin', 'least_conn' or 'hash'", -1);
    }
    lua_pop(p->L, 1);

    type = field(p, opts, "hash_key");
    if (type != LUA_TNIL && type != LUA_TFUNCTION) bad_value(p, "hash_key", "a function(req) returning the key", -1);
    if (def->balance == EDGE_BALANCE_HASH && type == LUA_TNIL)
        fail(p, "balance = 'hash' needs hash_key = function(req) returning the key");
    if (def->balance != EDGE_BALANCE_HASH && type != LUA_TNIL)
        fail(p, "hash_key is used only with balance = 'hash' (balance is '%s')",
             edge_upstream_balance_name(def->balance));
    if (type == LUA_TFUNCTION) p->u->hash_key_ref = luaL_ref(p->L, LUA_REGISTRYINDEX);
    else lua_pop(p->L, 1);
    for (size_t i = 0; def->balance == EDGE_BALANCE_HASH && i < def->n_servers; i++)
        if (def->servers[i].backup) fail(p, "servers[%zu]: backup servers cannot be used with balance = 'hash'", i + 1);
}

static void parse_keepalive(parse *p, int opts)
{
    if (!get_table(p, opts, NULL, "keepalive")) return;
    int t = lua_gettop(p->L);
    static const char *const known[] = {"size", "idle_timeout", "max_requests", NULL};
    check_keys(p, t, "keepalive", known, 0);
    edge_upstream_def *def = &p->u->def;
    get_int(p, t, "keepalive", "size", 0, 65535, &def->keepalive.size);
    get_seconds(p, t, "keepalive", "idle_timeout", &def->keepalive.idle_timeout);
    get_int(p, t, "keepalive", "max_requests", 1, 1000000000, &def->keepalive.max_requests);
    lua_pop(p->L, 1);
}

static void parse_timeout(parse *p, int opts)
{
    if (!get_table(p, opts, NULL, "timeout")) return;
    int t = lua_gettop(p->L);
    static const char *const known[] = {"connect", "send", "read", NULL};
    check_keys(p, t, "timeout", known, 0);
    edge_upstream_def *def = &p->u->def;
    get_seconds(p, t, "timeout", "connect", &def->timeout.connect);
    get_seconds(p, t, "timeout", "send", &def->timeout.send);
    get_seconds(p, t, "timeout", "read", &def->timeout.read);
    lua_pop(p->L, 1);
}

/* retries.on: a list of names (a status may also be written as a number). */
static unsigned parse_retry_on(parse *p)
{
    lua_State *L = p->L;
    int on = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, on);
    static const char *const none[] = {NULL};
    check_keys(p, on, "retries.on", none, n);
    unsigned bits = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, on, i);
        char num[24];
        const char *s = NULL;
        if (lua_isinteger(L, -1)) snprintf(num, sizeof(num), "%lld", (long long)lua_tointeger(L, -1)), s = num;
        else if (lua_type(L, -1) == LUA_TSTRING) s = lua_tostring(L, -1);
        unsigned bit = s ? edge_upstream_failure_parse(s) : 0;
        if (bit == 0) {
            char path[32];
            snprintf(path, sizeof(path), "retries.on[%lld]", (long long)i);
            bad_value(p, path, "one of 'connect', 'error', 'timeout', 'invalid_header', '500', '502', "
                      "'503', '504', '429', 'non_idempotent'", -1);
        }
        bits |= bit;
        lua_pop(L, 1);
    }
    return bits;
}

static void parse_retries(parse *p, int opts)
{
    if (!get_table(p, opts, NULL, "retries")) return;
    int t = lua_gettop(p->L);
    static const char *const known[] = {"tries", "on", NULL};
    check_keys(p, t, "retries", known, 0);
    edge_upstream_def *def = &p->u->def;
    get_int(p, t, "retries", "tries", 1, EDGE_UPSTREAM_MAX_TRIES, &def->retries.tries);
    if (get_table(p, t, "retries", "on")) {
        def->retries.on = parse_retry_on(p);
        lua_pop(p->L, 1);
    }
    lua_pop(p->L, 1);
}

/* health.active: nil or false (no check), or a table; its path starts with
 * '/', like a request target. */
static void parse_active(parse *p, int health)
{
    edge_upstream_def *def = &p->u->def;
    int type = field(p, health, "active");
    if (type == LUA_TNIL || (type == LUA_TBOOLEAN && !lua_toboolean(p->L, -1))) {
        lua_pop(p->L, 1);
        return;
    }
    if (type != LUA_TTABLE)
        bad_value(p, "health.active", "a table { path, interval, rise, fall, timeout } or false", -1);
    int t = lua_gettop(p->L);
    static const char *const known[] = {"path", "interval", "rise", "fall", "timeout", NULL};
    check_keys(p, t, "health.active", known, 0);
    def->active.enabled = 1;
    if (get_string(p, t, "health.active", "path", 2048, &def->active.path) && def->active.path[0] != '/') {
        field(p, t, "path");
        bad_value(p, "health.active.path", "a path that starts with '/'", -1);
    }
    get_seconds(p, t, "health.active", "interval", &def->active.interval);
    get_int(p, t, "health.active", "rise", 1, 1000, &def->active.rise);
    get_int(p, t, "health.active", "fall", 1, 1000, &def->active.fall);
    get_seconds(p, t, "health.active", "timeout", &def->active.timeout);
    lua_pop(p->L, 1);
}

static void parse_health(parse *p, int opts)
{
    if (!get_table(p, opts, NULL, "health")) return;
    int t = lua_gettop(p->L);
    static const char *const known[] = {"passive", "active", NULL};
    check_keys(p, t, "health", known, 0);
    edge_upstream_def *def = &p->u->def;
    if (get_table(p, t, "health", "passive")) {
        int ps = lua_gettop(p->L);
        static const char *const pknown[] = {"max_fails", "fail_timeout", NULL};
        check_keys(p, ps, "health.passive", pknown, 0);
        get_int(p, ps, "health.passive", "max_fails", 0, 1000000, &def->passive.max_fails);
        get_seconds(p, ps, "health.passive", "fail_timeout", &def->passive.fail_timeout);
        lua_pop(p->L, 1);
    }
    parse_active(p, t);
    lua_pop(p->L, 1);
}

/* tls: nil or false (plain HTTP), true (TLS with the defaults) or a table. */
static void parse_tls(parse *p, int opts)
{
    edge_upstream_def *def = &p->u->def;
    int type = field(p, opts, "tls");
    if (type == LUA_TNIL || type == LUA_TBOOLEAN) {
        def->tls.enabled = lua_toboolean(p->L, -1);
        lua_pop(p->L, 1);
        return;
    }
    if (type != LUA_TTABLE) bad_value(p, "tls", "true, false or a table { verify, sni, ca_file }", -1);
    int t = lua_gettop(p->L);
    static const char *const known[] = {"verify", "sni", "ca_file", NULL};
    check_keys(p, t, "tls", known, 0);
    def->tls.enabled = 1;
    get_bool(p, t, "tls", "verify", &def->tls.verify);
    get_string(p, t, "tls", "sni", HOST_MAX_LEN, &def->tls.sni);
    if (get_string(p, t, "tls", "ca_file", 4096, &def->tls.ca_file)) {
        FILE *f = fopen(def->tls.ca_file, "r");
        if (f == NULL) fail(p, "tls.ca_file: cannot read '%s': %s", def->tls.ca_file, strerror(errno));
        fclose(f);
    }
    lua_pop(p->L, 1);
}

static void parse_dns(parse *p, int opts)
{
    if (!get_table(p, opts, NULL, "dns")) return;
    int t = lua_gettop(p->L);
    static const char *const known[] = {"valid", NULL};
    check_keys(p, t, "dns", known, 0);
    get_seconds(p, t, "dns", "valid", &p->u->def.dns_valid);
    lua_pop(p->L, 1);
}

void edge_lua_upstream_parse(lua_State *L, edge_upstream *u, const char *name, int opts)
{
    parse ctx = {.L = L, .name = name, .u = u};
    parse *p = &ctx;
    static const char *const known[] = {"servers", "balance", "hash_key", "keepalive", "timeout",
                                        "retries", "health", "tls", "dns", NULL};
    opts = lua_absindex(L, opts);
    check_keys(p, opts, NULL, known, 0);
    parse_tls(p, opts);            /* first: it sets the servers' default port */
    parse_servers(p, opts);
    parse_balance(p, opts);
    parse_keepalive(p, opts);
    parse_timeout(p, opts);
    parse_retries(p, opts);
    parse_health(p, opts);
    parse_dns(p, opts);
}
