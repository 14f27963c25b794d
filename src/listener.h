/* Listening sockets: one per address per worker, bound with SO_REUSEPORT so
 * the kernel spreads connections over the workers. */
#ifndef EDGE_LISTENER_H
#define EDGE_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

/* Parses "ADDR:PORT", "[V6]:PORT" or ":PORT" into ss. EDGE_OK or EDGE_ERROR. */
int edge_listener_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* Checks that nobody listens on ss: binds a probe socket without
 * SO_REUSEPORT and closes it. Call it before edge_listener_open, whose
 * SO_REUSEPORT sockets would otherwise join another process's group. Port 0
 * passes. Returns 0, or the errno (EADDRINUSE: someone listens there) with
 * "cannot listen on LABELADDR: ..." in err (label: "" or "admin address "). */
int edge_listener_claim(const struct sockaddr_storage *ss, socklen_t len, const char *label, char *err,
                        size_t errlen);

/* Checks that ss could be bound by this process (a local address, a port it
 * may use), without claiming it: binds a SO_REUSEPORT socket, so a running
 * edge holding the address does not fail the check (for edge -t). Returns 0
 * or the errno, with a message in err as edge_listener_claim. */
int edge_listener_check(const struct sockaddr_storage *ss, socklen_t len, const char *label, char *err,
                        size_t errlen);

/* Opens a non-blocking, SO_REUSEPORT listening socket. Returns the fd, or -1
 * with a message in err (label as for edge_listener_claim). */
int edge_listener_open(const struct sockaddr_storage *ss, socklen_t len, const char *label, char *err,
                       size_t errlen);

/* Formats an address as "1.2.3.4:80" or "[::1]:80". */
void edge_sockaddr_format(const struct sockaddr_storage *ss, char *out, size_t n);

#endif
