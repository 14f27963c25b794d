/* OpenSSL contexts: the server's settings (every SNI context alike) and the
 * client's for origins. */
#include "tls.h"
#include "common.h"
#include "config.h"
#include "tls_certs.h"
#include "tls_tickets.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

/* In preference order, in ALPN wire format (length-prefixed). */
static const unsigned char alpn_server[] = "\x02h2\x08http/1.1";

static const char tls12_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* AES-128-GCM first (OpenSSL's default puts AES-256 first): its SHA-256 key
 * schedule and transcript hash are cheaper per handshake than SHA-384, and
 * its record encryption cheaper per byte, at a security margin every peer
 * (nginx with its defaults aside) considers ample. */
static const char tls13_ciphersuites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/* Picks the first protocol of ours the client offers; a client that offers
 * ALPN but none of ours is refused (no_application_protocol alert). */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, alpn_server, sizeof(alpn_server) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

const char *edge_tls_error_string(char *buf, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    buf[0] = '\0';
    if (e) ERR_error_string_n(e, buf, n);
    ERR_clear_error();
    return buf;
}

/* Session settings of every server context (each SNI context, and each
 * set a SIGHUP makes). The ticket keys (tls_tickets.h) are attached to every
 * one: OpenSSL takes them from the SSL's first (session) context, the
 * default, but any context may be that default after a reload. */
static void configure_server_ctx(SSL_CTX *ctx)
{
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_num_tickets(ctx, 1);      /* stateless session tickets, one per handshake */
    edge_tls_tickets_attach(ctx);         /* with the keys every worker shares */
}

SSL_CTX *edge_tls_server_ctx_new(const edge_config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, cfg->tls_min == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, tls12_ciphers);
    SSL_CTX_set_ciphersuites(ctx, tls13_ciphersuites);
    /* Our order, except that a client preferring ChaCha20 (no AES hardware)
     * gets it. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA |
                             SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Partial writes and a moving buffer let us retry from a growing output
     * buffer. Record buffers released when empty: a connection starts so, and
     * keeps them only while it is busy (conn.c, keep_tls_buffers). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    /* The chain sent is the certificate file's (leaf, then intermediates), as
     * nginx does: a certificate without a chain of its own would otherwise
     * have OpenSSL try to build one from the trust store on each handshake. */
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
    /* Read whole records (and whatever follows) in one read(2) instead of a
     * 5-byte header read and then the body: one syscall less per request. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
    configure_server_ctx(ctx);
    return ctx;
}

SSL_CTX *edge_tls_client_create(const char *ca_file, char *err, size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    /* Sessions are kept per origin by the pools (SSL_get1_session), not in
     * OpenSSL's client cache, which has no notion of our pool keys. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        snprintf(err, errlen, "cannot load the CA file %s: %s", ca_file ? ca_file : "(system store)",
                 edge_tls_error_string(why, sizeof(why)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

const char *edge_tls_protocol(SSL *ssl)
{
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(ssl, &p, &n);
    if (n == 2 && memcmp(p, "h2", 2) == 0) return "h2";
    return "http/1.1";
}
