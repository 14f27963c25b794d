/* Cache-Control, status, privacy and Vary rules for storing a response. */
#include "cache_policy.h"
#include "cache.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

/* RFC 9110 15.1: the statuses a cache may store without explicit freshness. */
static int cacheable_by_default(int status)
{
    switch (status) {
    case 200: case 203: case 204: case 206: case 300: case 301: case 308:
    case 404: case 405: case 410: case 414: case 501:
        return 1;
    default:
        return 0;
    }
}

typedef struct directives {
    int    forbidden;     /* no-store, private, no-cache */
    int    shareable;     /* public, must-revalidate or s-maxage: may answer others (RFC 9111 3.5) */
    double s_maxage;      /* -1 when absent */
    double max_age;
    double expires;       /* seconds from now an Expires field gives; -1 when absent */
    double swr;           /* stale-while-revalidate (RFC 5861); -1 when absent */
    double sie;           /* stale-if-error (RFC 5861); -1 when absent */
    int    no_stale;      /* must-revalidate / proxy-revalidate: never served stale */
} directives;

static int token_is(const char *p, size_t n, const char *name)
{
    size_t len = strlen(name);
    return n == len && strncasecmp(p, name, len) == 0;
}

static void apply_directive(directives *d, const char *name, size_t n, double value)
{
    if (token_is(name, n, "no-store") || token_is(name, n, "private") || token_is(name, n, "no-cache"))
        d->forbidden = 1;
    else if (token_is(name, n, "must-revalidate") || token_is(name, n, "proxy-revalidate"))
        d->shareable = 1, d->no_stale = 1;
    else if (token_is(name, n, "public"))
        d->shareable = 1;
    else if (token_is(name, n, "stale-while-revalidate") && value >= 0)
        d->swr = value;
    else if (token_is(name, n, "stale-if-error") && value >= 0)
        d->sie = value;
    else if (token_is(name, n, "s-maxage") && value >= 0)
        d->s_maxage = value, d->shareable = 1;
    else if (token_is(name, n, "max-age") && value >= 0)
        d->max_age = value;
}

/* Reads one comma-separated directive list (a Cache-Control value). */
static void parse_cache_control(const char *v, size_t n, directives *d)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t start = i;
        while (i < n && v[i] != '=' && v[i] != ',' && v[i] != ' ') i++;
        size_t name_len = i - start;
        double value = -1;
        if (i < n && v[i] == '=') {
            i++;
            if (i < n && v[i] == '"') i++;
            if (i < n && isdigit((unsigned char)v[i])) value = strtod(v + i, NULL);
        }
        while (i < n && v[i] != ',') i++;
        if (name_len) apply_directive(d, v + start, name_len, value);
    }
}

static int name_is(const edge_response *resp, const edge_header *h, const char *name, size_t n)
{
    return h->name.len == n && strncasecmp(resp->data.base + h->name.off, name, n) == 0;
}

/* Expires (RFC 9111 5.3): an IMF-fixdate; an invalid date means already
 * expired. Counted from now (edge's clock, not the origin's Date). */
static double expires_in(const char *v, size_t n)
{
    char text[64];
    if (n >= sizeof(text)) return 0;
    memcpy(text, v, n);
    text[n] = '\0';
    struct tm tm = {0};
    const char *end = strptime(text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0') return 0;
    double left = difftime(timegm(&tm), time(NULL));
    return left > 0 ? left : 0;
}

/* Whether the response forbids a shared cache to store it whatever the
 * script says, or leaves it to the rules below. */
static void read_response(const edge_response *resp, directives *d, int *has_cookie)
{
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        if (name_is(resp, h, "cache-control", 13))
            parse_cache_control(resp->data.base + h->value.off, h->value.len, d);
        else if (name_is(resp, h, "set-cookie", 10))
            *has_cookie = 1;
        else if (name_is(resp, h, "expires", 7))
            d->expires = expires_in(resp->data.base + h->value.off, h->value.len);
    }
}

/* The privacy and status rules a script lifts only with cache = "force". */
static int allowed_unforced(const edge_request *req, const edge_response *resp, const directives *d,
                            int has_cookie)
{
    if (has_cookie) return 0;
    edge_buf names = {0};
    int vary = edge_cache_policy_vary(resp, &names);
    edge_buf_free(&names);
    if (vary < 0) return 0;
    if (!d->shareable && edge_request_header(req, "authorization", 13)) return 0;
    return resp->cache_mode == EDGE_CACHE_ANY_STATUS || cacheable_by_default(resp->status);
}

/* The first that applies: the script's value, the directive, the default. */
static double pick(int has_script, double script, double directive, double dflt)
{
    if (has_script) return script;
    return directive >= 0 ? directive : dflt;
}

int edge_cache_policy_life(const edge_request *req, const edge_response *resp,
                           const edge_cache_life *dflt, edge_cache_life *life)
{
    *life = (edge_cache_life){0, 0, 0};
    if ((req->is_head && !resp->fetched_as_get) || resp->cache_mode == EDGE_CACHE_OFF) return 0;
    directives d = {0, 0, -1, -1, -1, -1, -1, 0};
    int has_cookie = 0;
    read_response(resp, &d, &has_cookie);
    if (d.forbidden) return 0;
    if (resp->cache_mode != EDGE_CACHE_FORCE && !allowed_unforced(req, resp, &d, has_cookie)) return 0;
    double ttl = d.s_maxage >= 0 ? d.s_maxage : d.max_age >= 0 ? d.max_age : d.expires;
    life->ttl = pick(resp->has_ttl, resp->ttl, ttl, dflt->ttl);
    if (life->ttl <= 0) return 0;
    /* must-revalidate: a stale copy must never be served (RFC 9111 5.2.2.2). */
    life->grace = pick(resp->has_grace, resp->grace, d.no_stale ? 0 : d.swr, d.no_stale ? 0 : dflt->grace);
    life->keep = pick(resp->has_keep, resp->keep, d.no_stale ? 0 : d.sie, d.no_stale ? 0 : dflt->keep);
    return 1;
}

/* ---- Vary ---- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Calls fn on each element of a comma-separated list, trimmed; empty ones skipped. */
static int each_element(const char *v, size_t n, int (*fn)(const char *, size_t, void *), void *ud)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && v[i] != ',') i++;
        size_t end = i++;
        while (start < end && is_ows(v[start])) start++;
        while (end > start && is_ows(v[end - 1])) end--;
        if (end > start && fn(v + start, end - start, ud)) return 1;
    }
    return 0;
}

/* Appends one Vary field name, lower-case; stops (returns 1) at "*". */
static int add_name(const char *p, size_t n, void *ud)
{
    edge_buf *names = ud;
    if (n == 1 && p[0] == '*') return 1;
    if (names->len) edge_buf_append(names, ",", 1);
    edge_buf_reserve(names, n);
    for (size_t i = 0; i < n; i++) names->base[names->len++] = (char)tolower((unsigned char)p[i]);
    return 0;
}

int edge_cache_policy_vary(const edge_response *resp, edge_buf *names)
{
    if (resp->cache_mode == EDGE_CACHE_FORCE) return 0;
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        if (name_is(resp, h, "vary", 4) &&
            each_element(resp->data.base + h->value.off, h->value.len, add_name, names))
            return -1;
    }
    return names->len ? 1 : 0;
}

typedef struct value_out {
    edge_buf *out;
    int       first;      /* no element written yet */
} value_out;

/* Appends one element of a request field value, after a comma when needed. */
static int add_value(const char *p, size_t n, void *ud)
{
    value_out *v = ud;
    if (!v->first) edge_buf_append(v->out, ",", 1);
    v->first = 0;
    edge_buf_append(v->out, p, n);
    return 0;
}

/* Appends "\0name=" and req's values for name, or "\0name\1" when absent. */
static void add_field(const edge_request *req, const char *name, size_t n, edge_buf *out)
{
    edge_buf_append(out, "\0", 1);
    edge_buf_append(out, name, n);
    size_t mark = out->len;
    edge_buf_append(out, "=", 1);
    value_out v = {out, 1};
    int found = 0;
    for (int i = 0; i < req->n_headers; i++) {
        const edge_header *h = &req->headers[i];
        if (h->name.len != n || memcmp(edge_request_ptr(req, h->name), name, n) != 0) continue;
        found = 1;
        each_element(edge_request_ptr(req, h->value), h->value.len, add_value, &v);
    }
    if (!found) out->base[mark] = '\1';
}

void edge_cache_policy_variant_key(const edge_request *req, const char *key, size_t klen,
                                   const char *names, size_t nlen, edge_buf *out)
{
    edge_buf_append(out, key, klen);
    edge_buf_append(out, "\0vary", 5);
    size_t i = 0;
    while (i < nlen) {
        size_t start = i;
        while (i < nlen && names[i] != ',') i++;
        add_field(req, names + start, i - start, out);
        i++;
    }
}
