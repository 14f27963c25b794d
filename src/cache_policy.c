/* Cache-Control and status rules for storing a response. */
#include "cache_policy.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>

static int cacheable_by_default(int status)
{
    switch (status) {
    case 200: case 203: case 204: case 300: case 301:
    case 404: case 405: case 410: case 414: case 501:
        return 1;
    default:
        return 0;
    }
}

typedef struct directives {
    int    forbidden;     /* no-store, private, no-cache */
    double s_maxage;      /* -1 when absent */
    double max_age;
} directives;

static int token_is(const char *p, size_t n, const char *name)
{
    size_t len = strlen(name);
    return n == len && strncasecmp(p, name, len) == 0;
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
        const char *name = v + start;
        if (token_is(name, name_len, "no-store") || token_is(name, name_len, "private") ||
            token_is(name, name_len, "no-cache"))
            d->forbidden = 1;
        else if (token_is(name, name_len, "s-maxage") && value >= 0)
            d->s_maxage = value;
        else if (token_is(name, name_len, "max-age") && value >= 0)
            d->max_age = value;
    }
}

double edge_cache_policy_ttl(const edge_response *resp, double default_ttl)
{
    directives d = {0, -1, -1};
    int has_cookie = 0;
    for (int i = 0; i < resp->n_headers; i++) {
        const edge_header *h = &resp->headers[i];
        const char *name = resp->data.base + h->name.off;
        if (h->name.len == 13 && strncasecmp(name, "cache-control", 13) == 0)
            parse_cache_control(resp->data.base + h->value.off, h->value.len, &d);
        else if (h->name.len == 10 && strncasecmp(name, "set-cookie", 10) == 0)
            has_cookie = 1;
    }
    if (d.forbidden) return 0;
    if (resp->has_ttl) return resp->ttl;
    if (has_cookie || !cacheable_by_default(resp->status)) return 0;
    if (d.s_maxage >= 0) return d.s_maxage;
    if (d.max_age >= 0) return d.max_age;
    return default_ttl;
}
