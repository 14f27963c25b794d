/* A byte tunnel between a client connection and an origin connection, after
 * the origin answered an HTTP/1.1 Upgrade (WebSocket) with 101 Switching
 * Protocols: from then on neither side speaks HTTP to us, and the bytes go
 * through unchanged both ways.
 *
 *   - Back-pressure: reading the origin stops while more than
 *     EDGE_TUNNEL_OUT_HIGH bytes wait for the client (resumed below
 *     EDGE_TUNNEL_OUT_LOW); reading the client stops (conn.c's own bound on
 *     unconsumed input, 64 KiB) while the origin does not take its bytes.
 *   - Idle timeout: no byte either way for idle_timeout seconds closes both.
 *   - Either side finishing (FIN, TLS close_notify) closes the other once what
 *     it sent was passed on; an error on either side closes both at once.
 *   - A graceful stop (SIGTERM) leaves tunnels running: the worker's drain
 *     timeout closes them at the latest.
 *
 * Ownership: edge_tunnel_start takes the origin connection (the tunnel frees
 * it when it ends) and becomes the client connection's protocol (c->proto);
 * the client connection itself is still closed by conn.c and freed by the
 * worker's reaper as usual. The protocol it replaces (HTTP/1.1) is kept,
 * untouched, and freed with the connection: the request whose 101 started the
 * tunnel stays valid for the access log line, written when the tunnel ends. */
#ifndef EDGE_TUNNEL_H
#define EDGE_TUNNEL_H

#include <stddef.h>

#define EDGE_TUNNEL_OUT_HIGH (256 * 1024)
#define EDGE_TUNNEL_OUT_LOW  (64 * 1024)

struct edge_conn;
struct edge_upconn;
struct edge_request;

/* Whether req's response is an origin's 101 that a tunnel can take: an
 * edge.proxy WebSocket handshake (its connection waits in resp.pipe). */
int edge_tunnel_ready(const struct edge_request *req);
/* HTTP/1.1 (h1.c's respond): queues the 101 head for the client and makes c
 * a tunnel to the origin connection in req's response; req stays (as the
 * old protocol's) until the tunnel ends, for its access log line. */
void edge_tunnel_upgrade(struct edge_conn *c, struct edge_request *req);

/* Starts relaying between c (its 101 head already queued in c->out; bytes
 * the client sent after its request head still in c->in) and u (an origin
 * connection that read the 101 head: its watchers are taken over; early holds
 * the n bytes it read past that head, copied). idle_timeout > 0 seconds.
 * log_req, when not NULL, is the request logged (status 101) when the tunnel
 * ends; it must live as long as the connection's previous protocol state. */
void edge_tunnel_start(struct edge_conn *c, struct edge_upconn *u, const char *early, size_t n,
                       double idle_timeout, struct edge_request *log_req);

#endif
