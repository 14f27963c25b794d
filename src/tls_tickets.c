/* TLS session ticket keys shared by every worker (tls_tickets.h).
 *
 * Tickets are encrypted with AES-CBC and authenticated with HMAC-SHA256, as
 * OpenSSL and nginx do, under a 16-byte key name that the ticket carries in
 * clear: decryption looks the name up among the keys in force. */
#include "tls_tickets.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NAME_LEN   16
#define SMALL_FILE 48   /* nginx: name (16), AES-128 key (16), HMAC key (16) */
#define LARGE_FILE 80   /* nginx: name (16), HMAC key (32), AES-256 key (32) */

typedef struct ticket_key {
    unsigned char name[NAME_LEN];
    unsigned char hmac[32];
    unsigned char aes[32];
    size_t        key_len;   /* 16: AES-128 and a 16-byte HMAC key (48-byte file); 32: AES-256 */
    double        created;   /* automatic keys: monotonic seconds when it began encrypting */
} ticket_key;

/* keys[0] encrypts new tickets; every key in force decrypts. Workers take
 * the lock shared only to copy the key they need (about 100 bytes) and let it
 * go before any crypto; the write side is a rotation (once a period) or a
 * SIGHUP. An automatic key encrypts for one period and decrypts for one more;
 * the session lifetime is one period (attach), so every ticket it encrypted
 * has expired by the time it is dropped. */
static struct {
    pthread_rwlock_t   lock;
    ticket_key         keys[EDGE_TICKET_MAX_FILES];
    int                n_keys;
    const char *const *files;    /* NULL: automatic keys */
    int                n_files;
    double             rotate;   /* automatic keys' period, seconds */
    /* Fetched once: EVP_aes_256_cbc() would fetch the implementation again
     * (a lock and a lookup) on every ticket. Kept for the process's life. */
    EVP_CIPHER        *aes128, *aes256;
} T = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* nginx's layouts (ngx_ssl_session_ticket_keys), so that the same file
 * serves both: 48 bytes name, AES-128, HMAC; 80 bytes name, HMAC, AES-256. */
static void key_from_bytes(ticket_key *k, const unsigned char *b, size_t size)
{
    memset(k, 0, sizeof(*k));
    memcpy(k->name, b, NAME_LEN);
    if (size == SMALL_FILE) {
        k->key_len = 16;
        memcpy(k->aes, b + 16, 16);
        memcpy(k->hmac, b + 32, 16);
    } else {
        k->key_len = 32;
        memcpy(k->hmac, b + 16, 32);
        memcpy(k->aes, b + 48, 32);
    }
}

static int random_key(ticket_key *k, double now)
{
    unsigned char b[LARGE_FILE];
    if (RAND_bytes(b, sizeof(b)) != 1) return EDGE_ERROR;
    key_from_bytes(k, b, sizeof(b));
    OPENSSL_cleanse(b, sizeof(b));
    k->created = now;
    return EDGE_OK;
}

/* Reads all of fd into b[0..size); EDGE_ERROR with errno set (0: the file
 * was shorter than it said). */
static int read_exactly(int fd, unsigned char *b, size_t size)
{
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, b + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = 0;
            return EDGE_ERROR;
        }
        got += (size_t)r;
    }
    return EDGE_OK;
}

static int read_key_file(const char *path, ticket_key *k, char *err, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, n, "cannot read --ticket-key-file %s: %s", path, strerror(errno));
        return EDGE_ERROR;
    }
    struct stat st;
    unsigned char b[LARGE_FILE];
    int rc = EDGE_ERROR;
    if (fstat(fd, &st) != 0) {
        snprintf(err, n, "cannot read --ticket-key-file %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode) || (st.st_size != SMALL_FILE && st.st_size != LARGE_FILE)) {
        snprintf(err, n, "--ticket-key-file %s is %s%lld bytes: a ticket key file must be 80 bytes "
                 "(AES-256) or 48 bytes (AES-128), nginx's format; make one with `openssl rand 80 > FILE`",
                 path, S_ISREG(st.st_mode) ? "" : "not a regular file, ", (long long)st.st_size);
    } else if (read_exactly(fd, b, (size_t)st.st_size) != EDGE_OK) {
        snprintf(err, n, "cannot read --ticket-key-file %s: %s", path,
                 errno ? strerror(errno) : "the file shrank while being read");
    } else {
        key_from_bytes(k, b, (size_t)st.st_size);
        rc = EDGE_OK;
    }
    OPENSSL_cleanse(b, sizeof(b));
    close(fd);
    return rc;
}

/* An automatic key decrypts for the period it encrypted in and one more. */
static int in_force(const ticket_key *k, double now)
{
    return T.files != NULL || now < k->created + 2 * T.rotate;
}

static int rotation_due(double now)
{
    return T.files == NULL && now >= T.keys[0].created + T.rotate;
}

enum { KEY_FOUND, KEY_NONE, KEY_ROTATE };

/* Copies the key that encrypts (name NULL) or the one named, and tells
 * whether it is the current one. KEY_ROTATE: the current key's period is
 * over, rotate first (unless may_rotate is 0: a rotation failed). */
static int take_key(const unsigned char *name, double now, int may_rotate, ticket_key *out, int *current)
{
    int rc = KEY_NONE;
    pthread_rwlock_rdlock(&T.lock);
    if (T.n_keys > 0 && may_rotate && rotation_due(now)) {
        rc = KEY_ROTATE;
    } else {
        for (int i = 0; i < T.n_keys; i++) {
            const ticket_key *k = &T.keys[i];
            if (name && (memcmp(name, k->name, NAME_LEN) != 0 || !in_force(k, now))) continue;
            *out = *k;
            *current = i == 0;
            rc = KEY_FOUND;
            break;
        }
    }
    pthread_rwlock_unlock(&T.lock);
    return rc;
}

/* Automatic keys rotate lazily, on the first ticket operation past the
 * period, instead of on a timer: the main thread only waits in sigwait and
 * the workers' loops are theirs, and an idle server needs no new key. The
 * new key is made before the write lock is taken; when another worker
 * rotated first, its key stands and ours is wiped. */
static int rotate(double now)
{
    ticket_key fresh;
    if (random_key(&fresh, now) != EDGE_OK) return EDGE_ERROR;
    pthread_rwlock_wrlock(&T.lock);
    if (rotation_due(now)) {
        int keep_previous = in_force(&T.keys[0], now);   /* not after a whole idle period */
        T.keys[1] = T.keys[0];
        T.keys[0] = fresh;
        T.n_keys = keep_previous ? 2 : 1;
        if (!keep_previous) OPENSSL_cleanse(&T.keys[1], sizeof(T.keys[1]));
    }
    pthread_rwlock_unlock(&T.lock);
    OPENSSL_cleanse(&fresh, sizeof(fresh));
    return EDGE_OK;
}

static const EVP_CIPHER *cipher_of(const ticket_key *k)
{
    return k->key_len == 16 ? T.aes128 : T.aes256;
}

static int set_mac_key(EVP_MAC_CTX *hctx, const ticket_key *k)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, k->key_len),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? EDGE_OK : EDGE_ERROR;
}

static int start_encrypt(const ticket_key *k, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx)
{
    const EVP_CIPHER *cipher = cipher_of(k);
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) != 1) return EDGE_ERROR;
    if (EVP_EncryptInit_ex(cctx, cipher, NULL, k->aes, iv) != 1) return EDGE_ERROR;
    memcpy(name, k->name, NAME_LEN);
    return set_mac_key(hctx, k);
}

static int start_decrypt(const ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx)
{
    if (set_mac_key(hctx, k) != EDGE_OK) return EDGE_ERROR;
    return EVP_DecryptInit_ex(cctx, cipher_of(k), NULL, k->aes, iv) == 1 ? EDGE_OK : EDGE_ERROR;
}

/* OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb).
 * Returns 1 (keys set), 2 (decrypted with a key that no longer encrypts:
 * the client gets a new ticket, as nginx does), 0 (unknown or retired key:
 * a full handshake), -1 (error). */
static int on_ticket_key(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    EDGE_UNUSED(ssl);
    ticket_key k;
    int current = 0;
    double now = T.files ? 0 : now_mono();
    const unsigned char *wanted = enc ? NULL : name;
    int found = take_key(wanted, now, 1, &k, &current);
    if (found == KEY_ROTATE) {
        int rotated = rotate(now) == EDGE_OK;   /* on failure the old key goes on until the next try */
        found = take_key(wanted, now, rotated, &k, &current);
    }
    if (found != KEY_FOUND) return 0;
    int rc = enc ? start_encrypt(&k, name, iv, cctx, hctx) : start_decrypt(&k, iv, cctx, hctx);
    OPENSSL_cleanse(&k, sizeof(k));
    if (rc != EDGE_OK) return -1;
    return enc || current ? 1 : 2;
}

static int fetch_ciphers(char *err, size_t n)
{
    if (T.aes128 == NULL) T.aes128 = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
    if (T.aes256 == NULL) T.aes256 = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (T.aes128 && T.aes256) return EDGE_OK;
    snprintf(err, n, "session tickets: OpenSSL has no AES-CBC implementation");
    return EDGE_ERROR;
}

int edge_tls_tickets_init(const char *const *files, double rotate_seconds, char *err, size_t n)
{
    if (fetch_ciphers(err, n) != EDGE_OK) return EDGE_ERROR;
    int count = 0;
    while (files && files[count]) count++;
    if (count > EDGE_TICKET_MAX_FILES) {
        snprintf(err, n, "at most %d --ticket-key-file may be given (%d were)", EDGE_TICKET_MAX_FILES, count);
        return EDGE_ERROR;
    }
    T.rotate = rotate_seconds >= 1 ? rotate_seconds : EDGE_TICKET_ROTATE_DEFAULT;
    T.files = count ? files : NULL;
    T.n_files = count;
    if (count) return edge_tls_tickets_reload(err, n);
    ticket_key k;
    if (random_key(&k, now_mono()) != EDGE_OK) {
        snprintf(err, n, "cannot make a session ticket key: the random generator failed");
        return EDGE_ERROR;
    }
    pthread_rwlock_wrlock(&T.lock);
    T.keys[0] = k;
    T.n_keys = 1;
    pthread_rwlock_unlock(&T.lock);
    OPENSSL_cleanse(&k, sizeof(k));
    return EDGE_OK;
}

void edge_tls_tickets_attach(SSL_CTX *ctx)
{
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    /* Automatic keys: a ticket lives one period, its key two (see T). With
     * files the operator's rotation decides, and OpenSSL's lifetime stands. */
    if (T.files == NULL) SSL_CTX_set_timeout(ctx, (long)T.rotate);
}

int edge_tls_tickets_reload(char *err, size_t n)
{
    if (n) err[0] = '\0';
    if (T.files == NULL) return EDGE_OK;
    ticket_key fresh[EDGE_TICKET_MAX_FILES];
    int rc = EDGE_OK;
    for (int i = 0; i < T.n_files && rc == EDGE_OK; i++) rc = read_key_file(T.files[i], &fresh[i], err, n);
    if (rc == EDGE_OK) {
        pthread_rwlock_wrlock(&T.lock);
        memcpy(T.keys, fresh, sizeof(fresh[0]) * (size_t)T.n_files);
        T.n_keys = T.n_files;
        pthread_rwlock_unlock(&T.lock);
    }
    OPENSSL_cleanse(fresh, sizeof(fresh));
    return rc;
}
