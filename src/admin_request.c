/* Parsing an admin request's header block. */
#include "admin_request.h"
#include "common.h"

#include <string.h>
#include <strings.h>

int edge_admin_request_parse(const char *buf, size_t hlen, edge_admin_request *r)
{
    const char *eol = memchr(buf, '\n', hlen);
    if (eol == NULL) return EDGE_ERROR;
    const char *line_end = eol > buf && eol[-1] == '\r' ? eol - 1 : eol;
    const char *sp = memchr(buf, ' ', (size_t)(line_end - buf));
    if (sp == NULL || sp == buf || (size_t)(sp - buf) >= sizeof(r->method)) return EDGE_ERROR;
    const char *target = sp + 1, *sp2 = memchr(target, ' ', (size_t)(line_end - target));
    if (sp2 == NULL || *target != '/' || line_end - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        sp2[8] < '0' || sp2[8] > '9')
        return EDGE_ERROR;
    memcpy(r->method, buf, (size_t)(sp - buf));
    r->method[sp - buf] = '\0';
    r->minor = sp2[8];
    const char *q = memchr(target, '?', (size_t)(sp2 - target));
    r->path = target;
    r->path_len = (size_t)((q ? q : sp2) - target);
    r->query = q ? q + 1 : NULL;
    r->query_len = q ? (size_t)(sp2 - q - 1) : 0;
    r->fields = eol + 1;
    r->end = buf + hlen;
    return EDGE_OK;
}

/* The next line of the fields from p on: returns its end (its '\n', or
 * r->end), and whether it starts with name (case-insensitive). */
static const char *line_at(const edge_admin_request *r, const char *p, const char *name, size_t n, int *named)
{
    const char *eol = memchr(p, '\n', (size_t)(r->end - p));
    if (eol == NULL) eol = r->end;
    *named = (size_t)(eol - p) >= n && strncasecmp(p, name, n) == 0;
    return eol;
}

const char *edge_admin_request_field(const edge_admin_request *r, const char *name, size_t *len)
{
    size_t n = strlen(name);
    int named;
    for (const char *p = r->fields, *eol; p && p < r->end; p = eol + 1) {
        eol = line_at(r, p, name, n, &named);
        if (!named) continue;
        const char *v = p + n, *e = eol;
        while (v < e && (*v == ' ' || *v == '\t')) v++;
        while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
        *len = (size_t)(e - v);
        return v;
    }
    return NULL;
}

/* Every field is looked at, not the first of a name only: a second
 * Content-Length must not slip a body past. */
int edge_admin_request_has_body(const edge_admin_request *r)
{
    int te, cl;
    for (const char *p = r->fields, *eol; p && p < r->end; p = eol + 1) {
        eol = line_at(r, p, "transfer-encoding:", 18, &te);
        line_at(r, p, "content-length:", 15, &cl);
        if (te) return 1;
        for (const char *v = p + 15; cl && v < eol; v++)
            if (*v != '0' && *v != ' ' && *v != '\t' && *v != '\r') return 1;
    }
    return 0;
}

int edge_admin_request_asks_close(const edge_admin_request *r)
{
    int named;
    for (const char *p = r->fields, *eol; p && p < r->end; p = eol + 1) {
        eol = line_at(r, p, "connection:", 11, &named);
        for (const char *v = p + 11; named && v + 5 <= eol; v++)
            if (strncasecmp(v, "close", 5) == 0) return 1;
    }
    return 0;
}
