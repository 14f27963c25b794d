/* The admin listener's request parser: one header block at a time, no
 * bodies. Requests are small and few, so it is simple rather than fast;
 * llhttp stays with the public listeners. */
#ifndef EDGE_ADMIN_REQUEST_H
#define EDGE_ADMIN_REQUEST_H

#include <stddef.h>

/* A request's parts: pointers into the block it was parsed from. */
typedef struct edge_admin_request {
    char        method[16];
    const char *path;
    size_t      path_len;
    const char *query;              /* after '?'; NULL when the target has none */
    size_t      query_len;
    char        minor;              /* HTTP/1.<minor> */
    const char *fields, *end;       /* the header fields, [fields, end) */
} edge_admin_request;

/* Parses the header block buf[0, hlen) (ending in its blank line) whose
 * request line is METHOD SP /TARGET SP HTTP/1.D. EDGE_OK or EDGE_ERROR. */
int edge_admin_request_parse(const char *buf, size_t hlen, edge_admin_request *r);
/* The value of the first header field called name (lower case, with its
 * colon, e.g. "authorization:"), trimmed, its length in *len; NULL when
 * there is none. */
const char *edge_admin_request_field(const edge_admin_request *r, const char *name, size_t *len);
/* 1 when a body follows the block (Transfer-Encoding, or a Content-Length
 * other than 0). */
int edge_admin_request_has_body(const edge_admin_request *r);
/* 1 when a Connection field says close. */
int edge_admin_request_asks_close(const edge_admin_request *r);

#endif
