/* Listening sockets: one per address per worker, bound with SO_REUSEPORT so
 * the kernel spreads connections over the workers. */
#ifndef EDGE_LISTENER_H
#define EDGE_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

/* Parses "ADDR:PORT", "[V6]:PORT" or ":PORT" into ss. EDGE_OK or EDGE_ERROR. */
int edge_listener_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* Opens a non-blocking, SO_REUSEPORT listening socket. Returns the fd, or -1
 * with a message in err. */
int edge_listener_open(const struct sockaddr_storage *ss, socklen_t len, char *err, size_t errlen);

/* Formats an address as "1.2.3.4:80" or "[::1]:80". */
void edge_sockaddr_format(const struct sockaddr_storage *ss, char *out, size_t n);

#endif
