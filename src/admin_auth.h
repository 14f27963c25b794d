/* Who may use the admin listener: an address that is not loopback needs a
 * bearer token, read from --admin-token-file; with a token, /cache (purge)
 * and /metrics need `Authorization: Bearer TOKEN`. */
#ifndef EDGE_ADMIN_AUTH_H
#define EDGE_ADMIN_AUTH_H

#include <stddef.h>

typedef struct edge_admin_auth edge_admin_auth;

/* Checks the admin options before anything starts: a token file needs an
 * admin address, an admin address that is not loopback (127.0.0.0/8, ::1)
 * needs a token file, and the file's first line, trimmed, must be a token.
 * EDGE_OK with *out (NULL when no token file was given; else the caller
 * owns it), or EDGE_ERROR with err naming the option. */
int edge_admin_auth_open(const char *admin_addr, const char *token_file, edge_admin_auth **out, char *err,
                         size_t errlen);
/* Re-reads the token file (SIGHUP). A file that no longer holds a token
 * leaves the previous one in force: EDGE_ERROR with err. Safe while the
 * admin thread checks requests. */
int edge_admin_auth_reload(edge_admin_auth *auth, char *err, size_t errlen);
/* 1 when value (an Authorization field's value, n bytes) is "Bearer" and
 * the token; its time does not depend on where a wrong token differs. */
int edge_admin_auth_accepts(edge_admin_auth *auth, const char *value, size_t n);
/* The token file's path, for messages. */
const char *edge_admin_auth_file(const edge_admin_auth *auth);
/* Frees auth (NULL: no-op). */
void edge_admin_auth_free(edge_admin_auth *auth);

/* 1 when addr ("ADDR:PORT", as --admin takes it) is a loopback address. */
int edge_admin_addr_is_loopback(const char *addr);

#endif
