/* The server's certificates, chosen by SNI. Several certificates are loaded
 * (tls_cert_files.h says which files); the names each one serves come from
 * the certificate itself: its subjectAltName DNS entries, or its CN when it
 * has no SAN. Certificates with the same names share one SSL_CTX, so an
 * ECDSA and an RSA certificate for a site are both offered and OpenSSL picks
 * the one the client's signature algorithms allow. A client's name picks a
 * context: the exact name (case-insensitive), else the wildcard one label up
 * (*.example.com matches a.example.com, not a.b.example.com nor
 * example.com), else the default: the first certificate's context. */
#ifndef EDGE_TLS_CERTS_H
#define EDGE_TLS_CERTS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct edge_config;

/* One certificate loaded, for the start-up log and -t. */
typedef struct edge_tls_cert_info {
    const char *cert_file;
    const char *key_file;
    const char *names;     /* "a.example.com www.a.example.com" (at most a few, then "+N more") */
    const char *key_type;  /* "ECDSA prime256v1", "RSA 2048", ... */
    int         is_default;   /* the first: clients with no or an unknown name get it */
} edge_tls_cert_info;

typedef void (*edge_tls_cert_report)(const edge_tls_cert_info *info, void *arg);

/* Loads every certificate of cfg into server contexts made by
 * edge_tls_server_ctx_new and returns the default's context, with the SNI
 * callback that switches an SSL to the context of its name. The returned
 * context owns the whole set: the set is freed with the last reference to
 * it, and every SSL made from it holds one (SSL_set_SSL_CTX keeps the first
 * context as the SSL's session context), so the callback's set outlives
 * every handshake. report (NULL: none) is called once per certificate. On
 * failure NULL, with a message naming the file and OpenSSL's reason. Called
 * on the main thread only. */
SSL_CTX *edge_tls_certs_load(const struct edge_config *cfg, edge_tls_cert_report report, void *arg,
                             char *err, size_t errlen);

#endif
