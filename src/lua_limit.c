/* edge.limit: the leaky bucket of resty.limit.req and the fixed window of
 * resty.limit.count, in C on shared dictionaries.
 *
 * resty.limit.req reads a record, computes and writes it back: two workers
 * may interleave there. Here each check is one locked read-modify-write of
 * one number (edge_shdict_update), so the budget of a key holds across
 * worker threads. */
#include "lua_limit.h"
#include "shared_dict.h"

#include <lauxlib.h>
#include <math.h>

#define REQ_MT   "edge.limit.req"
#define COUNT_MT "edge.limit.count"

/* Times near 1.7e9 s step by 2.4e-7 s in a double: a request arriving "just
 * at" the edge of the burst must not be refused for a rounding error. */
#define TIME_SLACK 1e-6

typedef struct req_limiter {
    edge_shdict *dict;
    const edge_lua_runtime *rt;
    double rate, burst;         /* requests per second; requests */
} req_limiter;

typedef struct count_limiter {
    edge_shdict *dict;
    const edge_lua_runtime *rt;
    double limit, window;       /* requests; seconds */
} count_limiter;

static double now(const edge_lua_runtime *rt)
{
    return rt->now(rt->ud);
}

/* The dictionary named by argument 1, or a raised error naming it. */
static edge_shdict *check_dict(lua_State *L, const char *fname)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    edge_shdict *d = edge_shdict_find(name, len);
    if (d == NULL)
        luaL_error(L, "edge.limit.%s: no shared dict \"%s\" (define it first: edge.shared.define(\"%s\", "
                   "size) or --shared-dict %s:size)", fname, name, name, name);
    return d;
}

static const char *check_key(lua_State *L, size_t *klen)
{
    const char *key = luaL_checklstring(L, 2, klen);
    luaL_argcheck(L, *klen > 0, 2, "key must not be empty");
    luaL_argcheck(L, *klen <= EDGE_SHDICT_MAX_KEY, 2, "key too long (at most 65535 bytes)");
    return key;
}

static int push_rejected(lua_State *L, double retry_after)
{
    lua_pushnil(L);
    lua_pushliteral(L, "rejected");
    lua_pushnumber(L, retry_after);
    return 3;
}

static int push_failure(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* ---- the leaky bucket ----
 *
 * resty.limit.req keeps (excess, last) and computes
 *   excess' = max(excess - rate * (now - last) + 1, 0)
 * admitting when excess' <= burst with a delay of excess' / rate. Writing
 * tat = last + (excess + 1) / rate (GCRA's theoretical arrival time: when
 * the next request would conform to the rate), the delay is max(tat - now, 0)
 * and a commit moves tat to max(tat, now) + 1 / rate: the same admissions and
 * delays from one number, which edge_shdict_update changes under the lock.
 * The key expires when tat passes: an absent key and a past tat mean alike. */

typedef struct req_check {
    double now, interval, burst_time;   /* 1 / rate; burst / rate */
    int    commit;
    int    admitted;
    double wait;                        /* the delay, or the retry_after */
} req_check;

static int req_update(void *ud, int has, double cur, double *next, double *ttl)
{
    req_check *c = ud;
    double tat = has && cur > c->now + TIME_SLACK ? cur : c->now;
    double delay = tat - c->now;
    c->admitted = delay <= c->burst_time + TIME_SLACK;
    c->wait = c->admitted ? delay : delay - c->burst_time;
    if (!c->admitted || !c->commit) return 0;
    *next = tat + c->interval;
    *ttl = *next - c->now;
    if (*ttl < c->interval) *ttl = c->interval;   /* a rate so high that 1/rate is lost in now's
                                                   * rounding: still a ttl (0 would mean forever) */
    return 1;
}

static int req_incoming(lua_State *L)
{
    req_limiter *lim = luaL_checkudata(L, 1, REQ_MT);
    size_t klen;
    const char *key = check_key(L, &klen);
    req_check c = { .now = now(lim->rt), .interval = 1 / lim->rate, .burst_time = lim->burst / lim->rate,
                    .commit = lua_toboolean(L, 3) };
    if (edge_shdict_update(lim->dict, key, klen, c.now, req_update, &c) < 0) return push_failure(L, "no memory");
    if (!c.admitted) return push_rejected(L, c.wait);
    lua_pushnumber(L, c.wait);
    lua_pushnumber(L, c.wait * lim->rate);      /* excess, in requests, as resty's */
    return 2;
}

typedef struct req_undo {
    double now, interval;
    int    found;
} req_undo;

/* Gives back one request's interval; a tat that falls to now or before is
 * the same as no record, and is kept only until it would have expired. */
static int req_uncommit_update(void *ud, int has, double cur, double *next, double *ttl)
{
    req_undo *u = ud;
    u->found = has && cur > u->now;
    if (!u->found) return 0;
    *next = fmax(cur - u->interval, u->now);
    *ttl = fmax(*next - u->now, u->interval);
    return 1;
}

static int req_uncommit(lua_State *L)
{
    req_limiter *lim = luaL_checkudata(L, 1, REQ_MT);
    size_t klen;
    const char *key = check_key(L, &klen);
    req_undo u = { .now = now(lim->rt), .interval = 1 / lim->rate };
    if (edge_shdict_update(lim->dict, key, klen, u.now, req_uncommit_update, &u) < 0)
        return push_failure(L, "no memory");
    if (!u.found) return push_failure(L, "not found");
    lua_pushboolean(L, 1);
    return 1;
}

/* edge.limit.req(dict_name, rate, burst): rate > 0 and burst >= 0 in
 * requests per second, as resty.limit.req.new. */
static int l_req(lua_State *L)
{
    edge_shdict *d = check_dict(L, "req");
    double rate = luaL_checknumber(L, 2), burst = luaL_checknumber(L, 3);
    luaL_argcheck(L, rate > 0 && isfinite(rate), 2, "rate must be a number > 0");
    luaL_argcheck(L, burst >= 0 && isfinite(burst), 3, "burst must be a number >= 0");
    req_limiter *lim = lua_newuserdatauv(L, sizeof(*lim), 0);
    *lim = (req_limiter){ .dict = d, .rt = lua_touserdata(L, lua_upvalueindex(1)), .rate = rate, .burst = burst };
    luaL_setmetatable(L, REQ_MT);
    return 1;
}

/* ---- the fixed window ----
 *
 * As resty.limit.count: the key holds what is left of the window's budget;
 * the first request of a window makes it with limit - 1 and a ttl of the
 * window, and its expiry is the window's end. One locked step per check: a
 * refused request takes nothing, a committed one keeps the window's end. */

typedef struct count_check {
    double limit, window;
    int    commit;
    int    admitted;
    double remaining;      /* after this request */
    double retry_after;    /* refused: seconds until the window resets */
} count_check;

static int count_update(void *ud, int has, double cur, double *next, double *ttl)
{
    count_check *c = ud;
    double left = has ? cur : c->limit;         /* an absent key: a fresh window */
    c->admitted = left >= 1;
    c->remaining = left - 1;
    if (!c->admitted) {
        c->retry_after = *ttl;
        return 0;
    }
    if (!c->commit) return 0;
    *next = left - 1;
    if (!has) *ttl = c->window;                 /* else the window's own end, kept */
    return 1;
}

static const char *incr_error(int rc)
{
    return rc == EDGE_SHDICT_NOT_NUMBER ? "not a number" : rc == EDGE_SHDICT_NOT_FOUND ? "not found" : "no memory";
}

static int count_incoming(lua_State *L)
{
    count_limiter *lim = luaL_checkudata(L, 1, COUNT_MT);
    size_t klen;
    const char *key = check_key(L, &klen);
    count_check c = { .limit = lim->limit, .window = lim->window, .commit = lua_toboolean(L, 3) };
    if (edge_shdict_update(lim->dict, key, klen, now(lim->rt), count_update, &c) < 0)
        return push_failure(L, "no memory");
    if (!c.admitted) return push_rejected(L, c.retry_after);
    lua_pushinteger(L, 0);
    lua_pushinteger(L, (lua_Integer)c.remaining);    /* whole: limit <= 1e15 */
    return 2;
}

/* Gives one request back to the window (resty's uncommit): the new remaining. */
static int count_uncommit(lua_State *L)
{
    count_limiter *lim = luaL_checkudata(L, 1, COUNT_MT);
    size_t klen;
    const char *key = check_key(L, &klen);
    double remaining;
    int rc = edge_shdict_incr(lim->dict, key, klen, 1, 0, 0, 0, now(lim->rt), &remaining, NULL);
    if (rc != EDGE_SHDICT_OK) return push_failure(L, incr_error(rc));
    lua_pushinteger(L, (lua_Integer)remaining);
    return 1;
}

/* edge.limit.count(dict_name, limit, window): limit requests per window
 * seconds, as resty.limit.count.new. */
static int l_count(lua_State *L)
{
    edge_shdict *d = check_dict(L, "count");
    double limit = luaL_checknumber(L, 2), window = luaL_checknumber(L, 3);
    luaL_argcheck(L, limit >= 1 && limit <= 1e15 && limit == floor(limit), 2, "limit must be a whole number >= 1");
    luaL_argcheck(L, window > 0 && isfinite(window), 3, "window must be a number of seconds > 0");
    count_limiter *lim = lua_newuserdatauv(L, sizeof(*lim), 0);
    *lim = (count_limiter){ .dict = d, .rt = lua_touserdata(L, lua_upvalueindex(1)), .limit = limit,
                            .window = window };
    luaL_setmetatable(L, COUNT_MT);
    return 1;
}

/* ---- the module ---- */

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods)
{
    if (luaL_newmetatable(L, name)) {
        lua_createtable(L, 0, 2);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

void edge_lua_limit_open(lua_State *L, const edge_lua_runtime *rt)
{
    static const luaL_Reg req_methods[] = { {"incoming", req_incoming}, {"uncommit", req_uncommit}, {NULL, NULL} };
    static const luaL_Reg count_methods[] = {
        {"incoming", count_incoming}, {"uncommit", count_uncommit}, {NULL, NULL}
    };
    static const luaL_Reg funcs[] = { {"req", l_req}, {"count", l_count}, {NULL, NULL} };
    new_class(L, REQ_MT, req_methods);
    new_class(L, COUNT_MT, count_methods);
    lua_createtable(L, 0, 2);
    lua_pushlightuserdata(L, (void *)rt);
    luaL_setfuncs(L, funcs, 1);
}
