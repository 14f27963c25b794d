/* Listening sockets. */
#include "listener.h"
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int edge_listener_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon[1] == '\0') return EDGE_ERROR;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535) return EDGE_ERROR;
    size_t hlen = (size_t)(colon - text);
    if (hlen >= sizeof(host)) return EDGE_ERROR;
    memcpy(host, text, hlen);
    host[hlen] = '\0';

    memset(ss, 0, sizeof(*ss));
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1) return EDGE_ERROR;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return EDGE_OK;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (hlen == 0) s4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0) s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) return EDGE_ERROR;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof(*s4);
    return EDGE_OK;
}

void edge_sockaddr_format(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, ntohs(s4->sin_port));
    }
}

/* A socket for ss with SO_REUSEADDR, and SO_REUSEPORT when reuseport. */
static int new_socket(const struct sockaddr_storage *ss, int reuseport)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    /* SO_REUSEADDR lets a restart bind over its old TIME_WAIT connections; it
     * never lets two sockets listen on one address (Linux). */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (ss->ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    return fd;
}

static void bind_error(const char *label, const char *name, int e, char *err, size_t errlen)
{
    if (e == EADDRINUSE)
        snprintf(err, errlen, "cannot listen on %s%s: address already in use (another edge?)", label, name);
    else
        snprintf(err, errlen, "cannot listen on %s%s: %s", label, name, strerror(e));
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                           : ((const struct sockaddr_in *)ss)->sin_port);
}

/* Binds a socket to ss (no listen) and closes it: can ss be bound now? */
static int probe_bind(const struct sockaddr_storage *ss, socklen_t len, int reuseport, const char *label,
                      char *err, size_t errlen)
{
    char name[80];
    edge_sockaddr_format(ss, name, sizeof(name));
    int fd = new_socket(ss, reuseport);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "socket for %s%s: %s", label, name, strerror(e));
        return e;
    }
    int rc = bind(fd, (const struct sockaddr *)ss, len);
    int e = errno;
    close(fd);
    if (rc != 0) {
        bind_error(label, name, e, err, errlen);
        return e;
    }
    return 0;
}

int edge_listener_claim(const struct sockaddr_storage *ss, socklen_t len, const char *label, char *err,
                        size_t errlen)
{
    if (port_of(ss) == 0) return 0;    /* the kernel picks a free port */
    /* Without SO_REUSEPORT the bind fails while anyone listens on the
     * address, a SO_REUSEPORT group (another edge) included. */
    return probe_bind(ss, len, 0, label, err, errlen);
}

int edge_listener_check(const struct sockaddr_storage *ss, socklen_t len, const char *label, char *err,
                        size_t errlen)
{
    return probe_bind(ss, len, 1, label, err, errlen);
}

int edge_listener_open(const struct sockaddr_storage *ss, socklen_t len, const char *label, char *err,
                       size_t errlen)
{
    char name[80];
    edge_sockaddr_format(ss, name, sizeof(name));
    int fd = new_socket(ss, 1);
    if (fd < 0) {
        snprintf(err, errlen, "socket for %s%s: %s", label, name, strerror(errno));
        return -1;
    }
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 4096) != 0) {
        bind_error(label, name, errno, err, errlen);
        close(fd);
        return -1;
    }
    return fd;
}
