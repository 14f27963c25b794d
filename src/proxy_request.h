/* The request edge.proxy sends to an origin, built from the client's:
 * method, target and headers as received, minus the hop-by-hop fields
 * (RFC 9110 7.6.1: Connection and the fields it names, Keep-Alive, TE,
 * Transfer-Encoding, Upgrade, Proxy-*), plus X-Forwarded-For/-Proto/-Host
 * and Via. Pure C over edge_request: the Lua binding fills the options. */
#ifndef EDGE_PROXY_REQUEST_H
#define EDGE_PROXY_REQUEST_H

#include "buf.h"
#include "request.h"

typedef struct edge_proxy_request_opts {
    const char *method;        /* NULL: the client's */
    size_t      method_len;
    const char *target;        /* path and query; NULL: the client's */
    size_t      target_len;
    const char *host;          /* Host sent; NULL: the client's */
    size_t      host_len;
    unsigned    no_host : 1;   /* the script's extra lines carry Host */
    const edge_buf *extra;     /* "Name: value\r\n" lines the script adds (opts.headers) */
    const edge_buf *drop;      /* lower-case names, each followed by '\0': client fields not sent */
    unsigned    x_forwarded : 1;
    unsigned    via : 1;
    unsigned    peer_trusted : 1;   /* the client is in --trusted-proxies: extend its X-Forwarded-For */
    unsigned    keep_upgrade : 1;   /* a WebSocket handshake: Upgrade and Connection: upgrade pass */
    unsigned    streamed_body : 1;  /* the body follows from a pipe: body_length, or chunked */
    int64_t     body_length;        /* streamed_body: its length, -1 when unknown */
    /* The request has a cache key: the cache answers the client's
     * conditionals and ranges itself, so If-* and Range are not forwarded
     * (as nginx's proxy_cache); the validators of an expired entry being
     * refreshed are sent instead (If-None-Match, If-Modified-Since). */
    unsigned    cached : 1;
    const char *if_none_match;      /* NULL: none */
    size_t      if_none_match_len;
    const char *if_modified_since;  /* NULL: none */
    size_t      if_modified_since_len;
} edge_proxy_request_opts;

/* Whether the client asks for a WebSocket (RFC 6455 4.1): an HTTP/1.1 GET
 * without a body, with Upgrade: websocket and Connection: upgrade. Then keep_upgrade, and a
 * 101 from the origin makes the connection a tunnel (tunnel.h). */
int edge_proxy_wants_upgrade(const edge_request *req);

/* Writes the request line and header block (with Content-Length when the
 * client sent a body, or Transfer-Encoding: chunked for a streamed body of
 * unknown length) into out; the body itself is not written. */
void edge_proxy_build_request(const edge_request *req, const edge_proxy_request_opts *o, edge_buf *out);

/* Whether a response field of this lower-case name is hop-by-hop or one edge
 * sets itself (Server, Date): not passed to the client. connection is the
 * response's Connection value (its listed names are hop-by-hop too). */
int edge_proxy_response_field_dropped(const char *name, size_t n, const char *connection, size_t clen);

#endif
