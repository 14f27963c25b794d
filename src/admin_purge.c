/* /cache on the admin listener: the query's parser and the purge. */
#include "admin_purge.h"
#include "cache.h"
#include "common.h"
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

enum { BY_NONE, BY_KEY, BY_PREFIX, BY_TAG };
static const char *const by_name[] = {"", "key", "prefix", "tag"};

#define NAME_SHOWN 64           /* bytes of an unknown parameter's name quoted back */
#define VALUE_LOGGED 256        /* bytes of a purged key/prefix/tag written to the log */

typedef struct purge_query {
    int      by;                /* BY_* */
    int      soft;
    int      soft_given;
    edge_buf value;             /* percent-decoded */
} purge_query;

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [p, end) into out, '+' as a space (as forms and req.args
 * do). EDGE_ERROR for a '%' without two hex digits after it, and for %00:
 * keys with a NUL are derived keys, purged through their base key. */
static int decode(const char *p, const char *end, edge_buf *out)
{
    edge_buf_reserve(out, (size_t)(end - p));
    for (; p < end; p++) {
        char c = *p;
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = end - p > 2 ? hexval((unsigned char)p[1]) : -1;
            int lo = end - p > 2 ? hexval((unsigned char)p[2]) : -1;
            if (hi < 0 || lo < 0 || (hi | lo) == 0) return EDGE_ERROR;
            c = (char)(hi << 4 | lo);
            p += 2;
        }
        out->base[out->len++] = c;
    }
    return EDGE_OK;
}

/* Appends s[0, n) as the inside of a JSON string. */
static void put_json_escaped(edge_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') edge_buf_printf(b, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f) edge_buf_printf(b, "\\u%04x", c);
        else edge_buf_append(b, &s[i], 1);
    }
}

static int fail(edge_buf *why, const char *msg)
{
    edge_buf_append_str(why, msg);
    return EDGE_ERROR;
}

static int name_is(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(p, name, n) == 0;
}

/* soft=1|true|0|false (not encoded: there is nothing to encode). */
static int parse_soft(purge_query *q, const char *v, size_t n, edge_buf *why)
{
    if (q->soft_given) return fail(why, "soft is given twice");
    q->soft_given = 1;
    if (name_is(v, n, "1") || name_is(v, n, "true")) q->soft = EDGE_PURGE_SOFT;
    else if (name_is(v, n, "0") || name_is(v, n, "false")) q->soft = EDGE_PURGE_HARD;
    else return fail(why, "soft must be 1, true, 0 or false");
    return EDGE_OK;
}

/* One name=value pair of the query: [p, end). */
static int parse_param(purge_query *q, const char *p, const char *end, edge_buf *why)
{
    const char *eq = memchr(p, '=', (size_t)(end - p));
    size_t nlen = (size_t)((eq ? eq : end) - p);
    const char *v = eq ? eq + 1 : end;
    if (name_is(p, nlen, "soft")) return parse_soft(q, v, (size_t)(end - v), why);
    int by = BY_NONE;
    for (int i = BY_KEY; i <= BY_TAG; i++)
        if (name_is(p, nlen, by_name[i])) by = i;
    if (by == BY_NONE) {
        edge_buf_printf(why, "unknown parameter '%.*s' (expected one of key, prefix or tag, and soft)",
                        (int)(nlen < NAME_SHOWN ? nlen : NAME_SHOWN), p);
        return EDGE_ERROR;
    }
    if (q->by != BY_NONE) return fail(why, "give exactly one of key, prefix or tag");
    q->by = by;
    if (decode(v, end, &q->value) != EDGE_OK) {
        edge_buf_printf(why, "%s: bad percent-encoding (%%XX with two hex digits, not %%00)", by_name[by]);
        return EDGE_ERROR;
    }
    /* An empty value is refused rather than read as "everything": an unset
     * shell variable in ?prefix=$P must not empty the cache. */
    if (q->value.len > 0) return EDGE_OK;
    edge_buf_printf(why, "%s is empty", by_name[by]);
    return EDGE_ERROR;
}

static int parse_query(purge_query *q, const char *query, size_t n, edge_buf *why)
{
    const char *p = query, *end = query + n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop > p && parse_param(q, p, stop, why) != EDGE_OK) return EDGE_ERROR;
        p = stop + (amp != NULL);
    }
    if (q->by != BY_NONE) return EDGE_OK;
    return fail(why, "give one of key, prefix or tag: /cache?key=K, /cache?prefix=P or /cache?tag=T");
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs the purge and logs it, with its duration (a purge is an operator's
 * act: the log says who emptied what, and how long it took). */
static size_t run(edge_cache *cache, const purge_query *q, double now)
{
    const char *v = q->value.base;
    size_t n = q->value.len, purged;
    double t0 = monotonic();
    if (q->by == BY_KEY) purged = edge_cache_purge_key(cache, v, n, q->soft, now);
    else if (q->by == BY_PREFIX) purged = edge_cache_purge_prefix(cache, v, n, q->soft, now);
    else purged = edge_cache_purge_tag(cache, v, n, q->soft, now);
    if (edge_log_enabled(EDGE_LOG_NOTICE)) {
        edge_buf shown = {0};
        put_json_escaped(&shown, v, n < VALUE_LOGGED ? n : VALUE_LOGGED);
        edge_log_write(EDGE_LOG_NOTICE, 0, "admin: %s purge by %s \"%.*s\"%s: %zu entries in %.3f ms",
                       q->soft ? "soft" : "hard", by_name[q->by], (int)shown.len, shown.base,
                       n > VALUE_LOGGED ? "..." : "", purged, (monotonic() - t0) * 1e3);
        edge_buf_free(&shown);
    }
    return purged;
}

int edge_admin_purge(edge_cache *cache, const char *query, size_t n, double now, edge_buf *body)
{
    purge_query q = {0};
    edge_buf why = {0};
    int status = 400;
    if (parse_query(&q, query, n, &why) == EDGE_OK) {
        edge_buf_printf(body, "{\"purged\":%zu}\n", run(cache, &q, now));
        status = 200;
    } else {
        edge_buf_append_str(body, "{\"error\":\"");
        put_json_escaped(body, why.base, why.len);
        edge_buf_append_str(body, "\"}\n");
    }
    edge_buf_free(&why);
    edge_buf_free(&q.value);
    return status;
}
