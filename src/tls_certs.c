/* The set of server certificates and the SNI callback that picks one. */
#include "tls_certs.h"
#include "common.h"
#include "config.h"
#include "tls.h"
#include "tls_cert_files.h"

#include <ctype.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 253        /* a DNS name; longer SNI names match nothing */
#define NAMES_LOGGED 4          /* names per certificate in its log line */

/* A certificate's names: lower-case, sorted, without duplicates. */
typedef struct name_list {
    char **v;
    int    n;
} name_list;

/* The certificates that serve the same names share one context. */
typedef struct cert_group {
    SSL_CTX  *ctx;              /* one reference, the set's (but see set_free) */
    name_list names;
    unsigned  key_types;        /* key_type_bit() of each certificate loaded into ctx */
} cert_group;

/* A name (or, in the wildcard index, the part after "*.") and its context. */
typedef struct name_entry {
    const char *name;           /* points into a group's names */
    SSL_CTX    *ctx;
    int         seq;            /* load order: the first certificate naming it wins */
} name_entry;

typedef struct cert_set {
    cert_group *groups;         /* groups[0] is the default's */
    int         n_groups;
    name_entry *exact;
    int         n_exact;
    name_entry *wild;
    int         n_wild;
} cert_set;

/* ---- names ---- */

static void names_free(name_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void names_add(name_list *l, const unsigned char *s, int len)
{
    if (len <= 0 || len > NAME_MAX_LEN || memchr(s, '\0', (size_t)len)) return;   /* not a DNS name */
    char *name = edge_malloc((size_t)len + 1);
    for (int i = 0; i < len; i++) name[i] = (char)tolower(s[i]);
    name[len] = '\0';
    l->v = edge_realloc(l->v, (size_t)(l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = name;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, each name once: two certificates with the same names in another
 * order (or repeated) compare equal, and serve together. */
static void names_sort_unique(name_list *l)
{
    if (l->n < 2) return;
    qsort(l->v, (size_t)l->n, sizeof(*l->v), by_string);
    int kept = 1;
    for (int i = 1; i < l->n; i++) {
        if (strcmp(l->v[i], l->v[kept - 1]) == 0) free(l->v[i]);
        else l->v[kept++] = l->v[i];
    }
    l->n = kept;
}

/* subjectAltName DNS entries; the CN only when there is no SAN at all (as
 * browsers do: a SAN with only IP addresses means no DNS names). */
static void cert_names(X509 *x, name_list *l)
{
    GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (san) {
        for (int i = 0; i < sk_GENERAL_NAME_num(san); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
            if (g->type == GEN_DNS)
                names_add(l, ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(san);
    } else {
        const X509_NAME *subject = X509_get_subject_name(x);
        int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
        unsigned char *cn = NULL;
        int len = i < 0 ? -1 : ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
        if (len > 0) names_add(l, cn, len);
        OPENSSL_free(cn);
    }
    names_sort_unique(l);
}

static int same_names(const name_list *a, const name_list *b)
{
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0) return 0;
    return 1;
}

/* "a.example.com www.a.example.com +3 more", for the log. */
static void names_format(const name_list *l, char *out, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    if (l->n == 0) snprintf(out, n, "(none: served as the default only)");
    for (int i = 0; i < l->n && i < NAMES_LOGGED && used < n; i++)
        used += (size_t)snprintf(out + used, n - used, "%s%s", i ? " " : "", l->v[i]);
    if (l->n > NAMES_LOGGED && used < n) snprintf(out + used, n - used, " +%d more", l->n - NAMES_LOGGED);
}

/* ---- key types ---- */

/* OpenSSL keeps one certificate per key type in a context; a second of the
 * same type would silently replace the first. */
static unsigned key_type_bit(EVP_PKEY *pk)
{
    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA: return 1;
    case EVP_PKEY_RSA_PSS: return 2;
    case EVP_PKEY_EC: return 4;
    case EVP_PKEY_ED25519: return 8;
    case EVP_PKEY_ED448: return 16;
    default: return 32;
    }
}

static void key_type_format(EVP_PKEY *pk, char *out, size_t n)
{
    char group[64];
    size_t len;
    int id = EVP_PKEY_get_base_id(pk);
    if (id == EVP_PKEY_EC)
        snprintf(out, n, "ECDSA %s",
                 EVP_PKEY_get_group_name(pk, group, sizeof(group), &len) == 1 ? group : "(unnamed curve)");
    else if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS)
        snprintf(out, n, "%s %d", id == EVP_PKEY_RSA ? "RSA" : "RSA-PSS", EVP_PKEY_get_bits(pk));
    else
        snprintf(out, n, "%s", OBJ_nid2sn(id));
}

/* ---- loading ---- */

/* What the log says about one certificate, kept until the whole set loaded. */
typedef struct loaded_cert {
    const char *cert_file;     /* the files list's */
    const char *key_file;
    char        names[512];
    char        key_type[80];
} loaded_cert;

static void set_free(cert_set *set, int from)
{
    for (int i = 0; i < set->n_groups; i++) {
        if (i >= from) SSL_CTX_free(set->groups[i].ctx);
        names_free(&set->groups[i].names);
    }
    free(set->groups);
    free(set->exact);
    free(set->wild);
    free(set);
}

/* One certificate file (the leaf, then its chain) and its key, as read. */
typedef struct pem_pair {
    X509           *leaf;
    STACK_OF(X509) *chain;
    EVP_PKEY       *key;
} pem_pair;

static void pem_pair_free(pem_pair *p)
{
    X509_free(p->leaf);
    sk_X509_pop_free(p->chain, X509_free);
    EVP_PKEY_free(p->key);
}

/* An encrypted key fails to load rather than prompt on the terminal: a
 * reload (SIGHUP) has no one to ask. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    EDGE_UNUSED(buf), EDGE_UNUSED(size), EDGE_UNUSED(rwflag), EDGE_UNUSED(u);
    return 0;
}

/* The chain after the leaf, up to the end of the file (the "no start line"
 * there is the end, not an error: as SSL_CTX_use_certificate_chain_file). */
static int read_chain(BIO *b, STACK_OF(X509) *chain)
{
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
        if (sk_X509_push(chain, x) <= 0) {
            X509_free(x);
            return EDGE_ERROR;
        }
    }
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) return EDGE_ERROR;
    ERR_clear_error();
    return EDGE_OK;
}

static int read_pair(const edge_cert_file *f, pem_pair *p, char *err, size_t errlen)
{
    char why[256];
    *p = (pem_pair){0};
    BIO *b = BIO_new_file(f->cert, "r");
    p->leaf = b ? PEM_read_bio_X509(b, NULL, no_passphrase, NULL) : NULL;
    p->chain = sk_X509_new_null();
    int ok = p->leaf && p->chain && read_chain(b, p->chain) == EDGE_OK;
    BIO_free(b);
    if (!ok) {
        snprintf(err, errlen, "bad certificate %s: %s", f->cert, edge_tls_error_string(why, sizeof(why)));
        return EDGE_ERROR;
    }
    b = BIO_new_file(f->key, "r");
    p->key = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (p->key == NULL) {
        snprintf(err, errlen, "bad key %s: %s", f->key, edge_tls_error_string(why, sizeof(why)));
        return EDGE_ERROR;
    }
    return EDGE_OK;
}

/* The group serving exactly names, a new one (and context) if none does yet;
 * names moves into a new group. NULL with a message if no context. */
static cert_group *group_for(cert_set *set, name_list *names, const edge_config *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < set->n_groups; i++)
        if (same_names(&set->groups[i].names, names)) return &set->groups[i];
    SSL_CTX *ctx = edge_tls_server_ctx_new(cfg, err, errlen);
    if (ctx == NULL) return NULL;
    set->groups = edge_realloc(set->groups, (size_t)(set->n_groups + 1) * sizeof(*set->groups));
    cert_group *g = &set->groups[set->n_groups++];
    *g = (cert_group){ctx, *names, 0};
    *names = (name_list){0};
    return g;
}

/* The leaf's names and key type, for the index and the log. */
static void describe(const edge_cert_file *f, X509 *leaf, name_list *names, loaded_cert *out)
{
    cert_names(leaf, names);
    *out = (loaded_cert){.cert_file = f->cert, .key_file = f->key};
    names_format(names, out->names, sizeof(out->names));
    key_type_format(X509_get0_pubkey(leaf), out->key_type, sizeof(out->key_type));
}

/* Puts the certificate, its chain and key in its names' context, in the
 * slot of its key type (SSL_CTX_use_cert_and_key checks the key matches). */
static int add_to_group(cert_group *g, const edge_cert_file *f, pem_pair *p, const loaded_cert *d, char *err,
                        size_t errlen)
{
    char why[256];
    unsigned type = key_type_bit(X509_get0_pubkey(p->leaf));
    if (g->key_types & type) {
        snprintf(err, errlen, "certificate %s: another %s certificate serves the same names (%s); "
                 "one per key type", f->cert, d->key_type, d->names);
        return EDGE_ERROR;
    }
    if (SSL_CTX_use_cert_and_key(g->ctx, p->leaf, p->key, p->chain, 1) != 1) {
        snprintf(err, errlen, "key %s does not match certificate %s (%s)", f->key, f->cert,
                 edge_tls_error_string(why, sizeof(why)));
        return EDGE_ERROR;
    }
    g->key_types |= type;
    return EDGE_OK;
}

static int load_cert(cert_set *set, const edge_config *cfg, const edge_cert_file *f, loaded_cert *out,
                     char *err, size_t errlen)
{
    pem_pair p;
    name_list names = {0};
    int rc = read_pair(f, &p, err, errlen);
    if (rc == EDGE_OK && X509_get0_pubkey(p.leaf) == NULL) {
        snprintf(err, errlen, "bad certificate %s: its public key cannot be used", f->cert);
        rc = EDGE_ERROR;
    }
    if (rc == EDGE_OK) {
        describe(f, p.leaf, &names, out);
        cert_group *g = group_for(set, &names, cfg, err, errlen);
        rc = g ? add_to_group(g, f, &p, out, err, errlen) : EDGE_ERROR;
    }
    names_free(&names);          /* empty when a new group took them; an existing group has its own */
    pem_pair_free(&p);           /* the context holds its own references */
    return rc;
}

/* ---- lookup ---- */

static void index_add(name_entry **v, int *n, const char *name, SSL_CTX *ctx, int seq)
{
    *v = edge_realloc(*v, (size_t)(*n + 1) * sizeof(**v));
    (*v)[(*n)++] = (name_entry){name, ctx, seq};
}

static int by_name_then_seq(const void *a, const void *b)
{
    const name_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : x->seq - y->seq;
}

/* Sorts the index by name and keeps, of each name, the entry of the first
 * certificate that named it (as nginx keeps the first server of a name). */
static void index_finish(name_entry *v, int *n)
{
    if (*n == 0) return;
    qsort(v, (size_t)*n, sizeof(*v), by_name_then_seq);
    int kept = 1;
    for (int i = 1; i < *n; i++)
        if (strcmp(v[i].name, v[kept - 1].name) != 0) v[kept++] = v[i];
    *n = kept;
}

/* Groups were made in load order, so a group's number is the load order of
 * its first certificate. */
static void index_build(cert_set *set)
{
    for (int i = 0; i < set->n_groups; i++) {
        const name_list *l = &set->groups[i].names;
        for (int j = 0; j < l->n; j++) {
            if (strncmp(l->v[j], "*.", 2) == 0 && l->v[j][2] != '\0')
                index_add(&set->wild, &set->n_wild, l->v[j] + 2, set->groups[i].ctx, i);
            else if (strchr(l->v[j], '*') == NULL)     /* partial wildcards (f*.example.com) match nothing */
                index_add(&set->exact, &set->n_exact, l->v[j], set->groups[i].ctx, i);
        }
    }
    index_finish(set->exact, &set->n_exact);
    index_finish(set->wild, &set->n_wild);
}

static int by_key(const void *key, const void *entry)
{
    return strcmp(key, ((const name_entry *)entry)->name);
}

static SSL_CTX *find(const name_entry *v, int n, const char *name)
{
    const name_entry *e = n ? bsearch(name, v, (size_t)n, sizeof(*v), by_key) : NULL;
    return e ? e->ctx : NULL;
}

/* The context for an SNI name; NULL: none names it (the default serves). */
static SSL_CTX *set_lookup(const cert_set *set, const char *host)
{
    char name[NAME_MAX_LEN + 1];
    size_t n = strlen(host);
    if (n == 0 || n > NAME_MAX_LEN) return NULL;
    for (size_t i = 0; i <= n; i++) name[i] = (char)tolower((unsigned char)host[i]);
    SSL_CTX *ctx = find(set->exact, set->n_exact, name);
    const char *dot = strchr(name, '.');
    if (ctx == NULL && dot && dot != name) ctx = find(set->wild, set->n_wild, dot + 1);
    return ctx;
}

/* Runs once the ClientHello is parsed, before the certificate is chosen
 * (by the context's certificates and the client's signature algorithms).
 * Every context is configured alike (edge_tls_server_ctx_new), so the
 * switch changes the certificates only. No name, or an unknown one: the
 * default context stays. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    const cert_set *set = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    SSL_CTX *ctx = host ? set_lookup(set, host) : NULL;
    if (ctx && ctx != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, ctx) == NULL) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* ---- the set's lifetime ---- */

/* The default context owns the set (its ex_data): when its last reference
 * goes (the main thread's, each worker's, each SSL's), OpenSSL calls this,
 * and the set releases the other contexts. Called for every SSL_CTX freed
 * (client contexts too), with ptr NULL where no set was attached. */
static void on_ctx_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    EDGE_UNUSED(parent), EDGE_UNUSED(ad), EDGE_UNUSED(idx), EDGE_UNUSED(argl), EDGE_UNUSED(argp);
    if (ptr) set_free(ptr, 1);      /* groups[0].ctx is the one being freed */
}

static int set_index = -1;
static pthread_once_t set_index_once = PTHREAD_ONCE_INIT;

static void make_set_index(void)
{
    set_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, on_ctx_free);
}

/* Hands the set to its default context; EDGE_ERROR (set untouched) if
 * OpenSSL cannot hold it. */
static int attach(cert_set *set, char *err, size_t errlen)
{
    SSL_CTX *def = set->groups[0].ctx;
    pthread_once(&set_index_once, make_set_index);
    if (set_index < 0 || SSL_CTX_set_ex_data(def, set_index, set) != 1) {
        snprintf(err, errlen, "cannot attach the certificates to their TLS context (out of memory)");
        return EDGE_ERROR;
    }
    SSL_CTX_set_tlsext_servername_callback(def, on_servername);
    SSL_CTX_set_tlsext_servername_arg(def, set);
    return EDGE_OK;
}

SSL_CTX *edge_tls_certs_load(const edge_config *cfg, edge_tls_cert_report report, void *arg, char *err,
                             size_t errlen)
{
    edge_cert_files files;
    if (edge_cert_files_collect(cfg, &files, err, errlen) != EDGE_OK) return NULL;
    cert_set *set = edge_calloc(1, sizeof(*set));
    loaded_cert *loaded = edge_calloc((size_t)files.n, sizeof(*loaded));
    int rc = EDGE_OK;
    for (int i = 0; i < files.n && rc == EDGE_OK; i++) rc = load_cert(set, cfg, &files.v[i], &loaded[i], err, errlen);
    if (rc == EDGE_OK) {
        index_build(set);
        rc = attach(set, err, errlen);
    }
    for (int i = 0; rc == EDGE_OK && report && i < files.n; i++)
        report(&(edge_tls_cert_info){loaded[i].cert_file, loaded[i].key_file, loaded[i].names, loaded[i].key_type,
                                     i == 0}, arg);
    free(loaded);
    edge_cert_files_free(&files);
    if (rc != EDGE_OK) {
        set_free(set, 0);
        return NULL;
    }
    return set->groups[0].ctx;
}
