/* Which certificate files the server loads: the --cert/--key pairs in the
 * order given, then every NAME.crt/NAME.key of --cert-dir by name. The
 * first is the default certificate (tls_certs.h). */
#ifndef EDGE_TLS_CERT_FILES_H
#define EDGE_TLS_CERT_FILES_H

#include <stddef.h>

struct edge_config;

#define EDGE_TLS_MAX_DIR_CERTS 4096   /* NAME.crt files read from one --cert-dir */

typedef struct edge_cert_file {
    char *cert;           /* paths, owned */
    char *key;
} edge_cert_file;

typedef struct edge_cert_files {
    edge_cert_file *v;
    int             n;
} edge_cert_files;

/* Fills files from cfg, every file readable and every .crt with its .key.
 * Without --cert, --cert-dir's default.crt (if there is one) comes first.
 * EDGE_OK, or EDGE_ERROR with a message naming the file (files then empty). */
int edge_cert_files_collect(const struct edge_config *cfg, edge_cert_files *files, char *err, size_t errlen);

void edge_cert_files_free(edge_cert_files *files);

#endif
