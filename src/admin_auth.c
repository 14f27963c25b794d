/* The admin listener's bearer token and the loopback rule. */
#include "admin_auth.h"
#include "common.h"
#include "listener.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_MAX 4096          /* bytes; a longer first line is refused (the message says 4096) */
#define DIGEST_LEN 32           /* SHA-256 */

struct edge_admin_auth {
    char *path;
    /* The token is kept only as its digest, and requests are checked on
     * their digest too: comparing two fixed-length digests takes the same
     * time wherever a wrong token differs, and for any length of it. The
     * lock is there because SIGHUP replaces the digest on the main thread
     * while the admin thread reads it. */
    pthread_mutex_t lock;
    unsigned char digest[DIGEST_LEN];
};

static void digest_of(const char *s, size_t n, unsigned char out[DIGEST_LEN])
{
    unsigned int len = DIGEST_LEN;
    if (EVP_Digest(s, n, out, &len, EVP_sha256(), NULL) != 1) abort();   /* SHA-256 is always there */
}

/* Trims white space off both ends of [*p, *end). */
static void trim(const char **p, const char **end)
{
    while (*p < *end && isspace((unsigned char)**p)) (*p)++;
    while (*end > *p && isspace((unsigned char)(*end)[-1])) (*end)--;
}

/* A token is printable ASCII without white space, so that it survives
 * being sent in a header field exactly as the file holds it. */
static int is_token(const char *p, const char *end)
{
    for (; p < end; p++)
        if (*p < 0x21 || *p > 0x7e) return 0;
    return 1;
}

/* Reads the first line of path, trimmed, and digests it. */
static int load_digest(const char *path, unsigned char out[DIGEST_LEN], char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read --admin-token-file %s: %s", path, strerror(errno));
        return EDGE_ERROR;
    }
    setvbuf(f, NULL, _IONBF, 0);          /* no stdio buffer left holding the token after fclose */
    char line[TOKEN_MAX + 64];
    errno = 0;
    const char *got = fgets(line, sizeof(line), f);
    int e = ferror(f) ? (errno ? errno : EIO) : 0;
    int too_long = got && strchr(line, '\n') == NULL && !feof(f);
    fclose(f);
    const char *p = line, *end = got ? line + strlen(line) : line;
    trim(&p, &end);
    const char *bad = too_long || end - p > TOKEN_MAX ? "the first line is longer than 4096 bytes"
                    : p == end                         ? "the first line holds no token (empty)"
                    : !is_token(p, end)                ? "the token must be printable ASCII without spaces"
                                                       : NULL;
    int rc = EDGE_ERROR;
    if (e) snprintf(err, errlen, "cannot read --admin-token-file %s: %s", path, strerror(e));
    else if (bad) snprintf(err, errlen, "--admin-token-file %s: %s", path, bad);
    else {
        digest_of(p, (size_t)(end - p), out);
        rc = EDGE_OK;
    }
    OPENSSL_cleanse(line, sizeof(line));
    return rc;
}

int edge_admin_addr_is_loopback(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (edge_listener_parse(addr, &ss, &len) != EDGE_OK) return 0;
    if (ss.ss_family == AF_INET)
        return ntohl(((const struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24 == 127;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

int edge_admin_auth_open(const char *admin_addr, const char *token_file, edge_admin_auth **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    if (token_file && admin_addr == NULL) {
        snprintf(err, errlen, "--admin-token-file %s is given without --admin ADDR:PORT: there is no admin "
                 "listener for the token to protect", token_file);
        return EDGE_ERROR;
    }
    if (token_file == NULL) {
        if (admin_addr == NULL || edge_admin_addr_is_loopback(admin_addr)) return EDGE_OK;
        snprintf(err, errlen, "--admin %s is not a loopback address: give --admin-token-file FILE too, so that "
                 "/cache (purge) and /metrics need a token, or use --admin 127.0.0.1:PORT", admin_addr);
        return EDGE_ERROR;
    }
    unsigned char d[DIGEST_LEN];
    if (load_digest(token_file, d, err, errlen) != EDGE_OK) return EDGE_ERROR;
    edge_admin_auth *auth = edge_calloc(1, sizeof(*auth));
    auth->path = edge_strdup(token_file);
    pthread_mutex_init(&auth->lock, NULL);
    memcpy(auth->digest, d, DIGEST_LEN);
    *out = auth;
    return EDGE_OK;
}

int edge_admin_auth_reload(edge_admin_auth *auth, char *err, size_t errlen)
{
    unsigned char d[DIGEST_LEN];
    if (load_digest(auth->path, d, err, errlen) != EDGE_OK) return EDGE_ERROR;
    pthread_mutex_lock(&auth->lock);
    memcpy(auth->digest, d, DIGEST_LEN);
    pthread_mutex_unlock(&auth->lock);
    return EDGE_OK;
}

int edge_admin_auth_accepts(edge_admin_auth *auth, const char *value, size_t n)
{
    const char *p = value, *end = value + n;
    trim(&p, &end);
    /* RFC 6750: "Bearer" (any case), one or more spaces, the token. */
    if (end - p < 8 || strncasecmp(p, "bearer", 6) != 0 || p[6] != ' ') return 0;
    p += 7;
    while (p < end && *p == ' ') p++;
    if (p == end || end - p > TOKEN_MAX) return 0;
    unsigned char got[DIGEST_LEN], want[DIGEST_LEN];
    digest_of(p, (size_t)(end - p), got);
    pthread_mutex_lock(&auth->lock);
    memcpy(want, auth->digest, DIGEST_LEN);
    pthread_mutex_unlock(&auth->lock);
    return CRYPTO_memcmp(got, want, DIGEST_LEN) == 0;
}

const char *edge_admin_auth_file(const edge_admin_auth *auth)
{
    return auth->path;
}

void edge_admin_auth_free(edge_admin_auth *auth)
{
    if (auth == NULL) return;
    pthread_mutex_destroy(&auth->lock);
    OPENSSL_cleanse(auth->digest, DIGEST_LEN);
    free(auth->path);
    free(auth);
}
