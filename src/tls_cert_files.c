/* The list of certificate files to load, from the command line and
 * --cert-dir. Only names and readability are checked here; the contents are
 * tls_certs.c's. */
#include "tls_cert_files.h"
#include "common.h"
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char make_certs_hint[] =
    "run `make certs` to create a development certificate, or pass --cert/--key";

static char *join_path(const char *dir, const char *base, const char *ext)
{
    size_t n = strlen(dir) + strlen(base) + strlen(ext) + 2;
    char *p = edge_malloc(n);
    snprintf(p, n, "%s/%s%s", dir, base, ext);
    return p;
}

static void add(edge_cert_files *files, char *cert, char *key)
{
    files->v = edge_realloc(files->v, (size_t)(files->n + 1) * sizeof(*files->v));
    files->v[files->n++] = (edge_cert_file){cert, key};
}

/* A --cert/--key file or the default beside the binary: one not found says
 * where it was looked for and how to make one (as before --cert-dir). */
static int check_arg_file(const char *path, const char *what, const char *tried, char *err, size_t errlen)
{
    if (path == NULL) {
        snprintf(err, errlen, "no %s found (tried %s): %s", what, tried ? tried : "nothing", make_certs_hint);
        return EDGE_ERROR;
    }
    if (access(path, R_OK) != 0) {
        snprintf(err, errlen, "cannot read %s %s: %s; %s", what, path, strerror(errno), make_certs_hint);
        return EDGE_ERROR;
    }
    return EDGE_OK;
}

static int collect_args(const edge_config *cfg, edge_cert_files *files, char *err, size_t errlen)
{
    if (cfg->n_cert != cfg->n_key) {
        snprintf(err, errlen, "%d --cert but %d --key given: each --cert needs its --key, in the same order",
                 cfg->n_cert, cfg->n_key);
        return EDGE_ERROR;
    }
    for (int i = 0; i < cfg->n_cert; i++) {
        if (check_arg_file(cfg->cert[i], "certificate", cfg->cert_tried, err, errlen) != EDGE_OK ||
            check_arg_file(cfg->key[i], "key", cfg->key_tried, err, errlen) != EDGE_OK)
            return EDGE_ERROR;
        add(files, edge_strdup(cfg->cert[i]), edge_strdup(cfg->key[i]));
    }
    return EDGE_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* The NAME of every visible NAME.crt in dir, sorted (byte order), count in
 * *n. NULL with a message when dir cannot be read or holds too many. */
static char **list_crt_names(const char *dir, int *n, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot read --cert-dir %s: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = edge_calloc(1, sizeof(*names));
    *n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len <= 4 || strcmp(e->d_name + len - 4, ".crt") != 0) continue;
        if (*n == EDGE_TLS_MAX_DIR_CERTS) {
            snprintf(err, errlen, "more than %d certificates in --cert-dir %s", EDGE_TLS_MAX_DIR_CERTS, dir);
            free_names(names, *n);
            closedir(d);
            return NULL;
        }
        names = edge_realloc(names, (size_t)(*n + 1) * sizeof(*names));
        names[*n] = edge_malloc(len - 3);
        memcpy(names[*n], e->d_name, len - 4);
        names[(*n)++][len - 4] = '\0';
    }
    closedir(d);
    qsort(names, (size_t)*n, sizeof(*names), by_name);
    return names;
}

/* default.crt first when the directory provides the default certificate. */
static void put_default_first(char **names, int n)
{
    for (int i = 1; i < n; i++) {
        if (strcmp(names[i], "default") != 0) continue;
        char *d = names[i];
        memmove(names + 1, names, (size_t)i * sizeof(*names));
        names[0] = d;
        return;
    }
}

static int check_dir_pair(const char *cert, const char *key, char *err, size_t errlen)
{
    if (access(cert, R_OK) != 0) {
        snprintf(err, errlen, "cannot read certificate %s: %s", cert, strerror(errno));
        return EDGE_ERROR;
    }
    if (access(key, R_OK) != 0) {
        snprintf(err, errlen, "certificate %s has no key %s: %s", cert, key, strerror(errno));
        return EDGE_ERROR;
    }
    return EDGE_OK;
}

static int collect_dir(const char *dir, int provides_default, edge_cert_files *files, char *err, size_t errlen)
{
    int n, rc = EDGE_OK;
    char **names = list_crt_names(dir, &n, err, errlen);
    if (names == NULL) return EDGE_ERROR;
    if (provides_default) put_default_first(names, n);
    for (int i = 0; i < n && rc == EDGE_OK; i++) {
        char *cert = join_path(dir, names[i], ".crt"), *key = join_path(dir, names[i], ".key");
        rc = check_dir_pair(cert, key, err, errlen);
        if (rc == EDGE_OK) {
            add(files, cert, key);
        } else {
            free(cert);
            free(key);
        }
    }
    free_names(names, n);
    if (rc == EDGE_OK && n == 0 && files->n == 0) {
        snprintf(err, errlen, "no certificate in --cert-dir %s (expected NAME.crt with NAME.key)", dir);
        rc = EDGE_ERROR;
    }
    return rc;
}

int edge_cert_files_collect(const edge_config *cfg, edge_cert_files *files, char *err, size_t errlen)
{
    files->v = NULL;
    files->n = 0;
    int rc = collect_args(cfg, files, err, errlen);
    if (rc == EDGE_OK && cfg->cert_dir) rc = collect_dir(cfg->cert_dir, cfg->n_cert == 0, files, err, errlen);
    if (rc == EDGE_OK && files->n == 0) {
        snprintf(err, errlen, "no certificate given: pass --cert/--key or --cert-dir");
        rc = EDGE_ERROR;
    }
    if (rc != EDGE_OK) edge_cert_files_free(files);
    return rc;
}

void edge_cert_files_free(edge_cert_files *files)
{
    for (int i = 0; i < files->n; i++) {
        free(files->v[i].cert);
        free(files->v[i].key);
    }
    free(files->v);
    files->v = NULL;
    files->n = 0;
}
