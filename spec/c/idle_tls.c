/* Holds many idle TLS connections open to a server, to measure what an idle
 * connection costs the server (spec/memory_idle_spec.lua, scripts/bench.sh's
 * idle scenario).
 *
 *   idle_tls PORT COUNT [h1|h2|none] [HOLD_SECONDS]
 *
 * Opens COUNT TLS 1.3 connections to 127.0.0.1:PORT one after the other; on
 * each, h1 sends one HTTP/1.1 request for / and reads the whole response
 * (Content-Length), h2 sends the HTTP/2 preface, an empty SETTINGS and a
 * SETTINGS ack after reading the server's, none does only the handshake.
 * Then prints "open COUNT" and keeps every connection open for HOLD_SECONDS,
 * or, without it, until stdin closes or a line arrives; then closes them all
 * and exits 0. Any failure
 * prints "failed: ..." on stderr and exits 1. Every read waits at most 10 s. */
#define _GNU_SOURCE      /* strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void fail(int i, const char *what)
{
    char why[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e) ERR_error_string_n(e, why, sizeof(why));
    fprintf(stderr, "failed: connection %d: %s %s\n", i, what, why);
    exit(1);
}

static int connect_to(int port, int i)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail(i, "socket");
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) fail(i, "connect");
    return fd;
}

static void write_all(SSL *ssl, const void *p, int n, int i)
{
    if (SSL_write(ssl, p, n) != n) fail(i, "write");
}

/* One request, its whole response read: headers, then Content-Length bytes. */
static void h1_request(SSL *ssl, int i)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    write_all(ssl, req, (int)sizeof(req) - 1, i);
    char buf[16384];
    size_t have = 0;
    char *end = NULL;
    while (end == NULL) {
        int r = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));
        if (r <= 0) fail(i, "read (headers)");
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL && have == sizeof(buf) - 1) fail(i, "headers too long");
    }
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    if (cl == NULL) fail(i, "no content-length");
    long want = strtol(cl + 17, NULL, 10);
    long got = (long)(have - (size_t)(end + 4 - buf));
    while (got < want) {
        int r = SSL_read(ssl, buf, (int)sizeof(buf));
        if (r <= 0) fail(i, "read (body)");
        got += r;
    }
}

/* The client preface and SETTINGS; the server's SETTINGS read and acked. */
static void h2_open(SSL *ssl, int i)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                  "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    static const char ack[] = "\x00\x00\x00\x04\x01\x00\x00\x00\x00";
    write_all(ssl, preface, (int)sizeof(preface) - 1, i);
    unsigned char hdr[9];
    for (int got = 0; got < 9;) {
        int r = SSL_read(ssl, hdr + got, 9 - got);
        if (r <= 0) fail(i, "read (settings)");
        got += r;
    }
    if (hdr[3] != 4) fail(i, "first frame is not SETTINGS");
    size_t len = (size_t)hdr[0] << 16 | (size_t)hdr[1] << 8 | hdr[2];
    unsigned char skip[512];
    while (len > 0) {
        int r = SSL_read(ssl, skip, (int)(len < sizeof(skip) ? len : sizeof(skip)));
        if (r <= 0) fail(i, "read (settings payload)");
        len -= (size_t)r;
    }
    write_all(ssl, ack, (int)sizeof(ack) - 1, i);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: idle_tls PORT COUNT [h1|h2|none] [HOLD_SECONDS]\n");
        return 2;
    }
    int port = atoi(argv[1]), count = atoi(argv[2]);
    const char *mode = argc > 3 ? argv[3] : "h1";
    struct rlimit rl = {(rlim_t)count + 64, (rlim_t)count + 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "failed: cannot allow %d open files\n", count + 64);
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    int h2 = strcmp(mode, "h2") == 0;
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)(h2 ? "\x02h2" : "\x08http/1.1"), h2 ? 3 : 9);
    SSL **conns = calloc((size_t)count, sizeof(*conns));
    if (conns == NULL) return 1;
    for (int i = 0; i < count; i++) {
        int fd = connect_to(port, i);
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "localhost");
        if (SSL_connect(ssl) != 1) fail(i, "handshake");
        if (strcmp(mode, "h1") == 0) h1_request(ssl, i);
        else if (h2) h2_open(ssl, i);
        conns[i] = ssl;
    }
    printf("open %d\n", count);
    fflush(stdout);
    if (argc > 4) {
        sleep((unsigned)atoi(argv[4]));
    } else {
        char line[64];
        (void)!fgets(line, sizeof(line), stdin);
    }
    for (int i = 0; i < count; i++) {
        close(SSL_get_fd(conns[i]));
        SSL_free(conns[i]);
    }
    free(conns);
    SSL_CTX_free(ctx);
    return 0;
}
