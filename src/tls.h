/* The server's TLS contexts: TLS 1.3 preferred, TLS 1.2 with ECDHE + AEAD
 * only, ALPN chosen by the server's preference. Read-only once created, so
 * every worker shares them; a SIGHUP makes a new set (main.c). */
#ifndef EDGE_TLS_H
#define EDGE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct edge_config;

/* A server context with edge's settings (versions, ciphers, ALPN, modes,
 * sessions) and no certificate: every context of the set is made here, so
 * that switching an SSL between them by SNI changes nothing else. */
SSL_CTX *edge_tls_server_ctx_new(const struct edge_config *cfg, char *err, size_t errlen);

/* A client context for connections to origins: TLS 1.2+, peers verified
 * against ca_file (a PEM bundle) or, when NULL, the system store. Each
 * connection sets its own SNI, expected name and verify mode. NULL with a
 * message in err when ca_file cannot be loaded. */
SSL_CTX *edge_tls_client_create(const char *ca_file, char *err, size_t errlen);

/* The protocol ALPN selected on an established connection: "h2", "http/1.1"
 * (also when the client sent no ALPN). */
const char *edge_tls_protocol(SSL *ssl);

/* The reason of the last OpenSSL error, for log lines ("" when none). */
const char *edge_tls_error_string(char *buf, size_t n);

#endif
