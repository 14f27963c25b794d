/* Server configuration: defaults, and the command line that changes them. */
#ifndef EDGE_CONFIG_H
#define EDGE_CONFIG_H

#include <stddef.h>

#include "cidr.h"

#define EDGE_MAX_LISTEN 16
#define EDGE_MAX_CERT_ARGS 64       /* --cert (and --key) given on the command line */
#define EDGE_MAX_TICKET_KEY_FILES 16   /* tls_tickets.h: EDGE_TICKET_MAX_FILES */

typedef struct edge_config {
    const char *script;
    const char *listen[EDGE_MAX_LISTEN];
    int         n_listen;           /* 0: the defaults 0.0.0.0:8443 and [::]:8443 */
    const char *listen_plain[EDGE_MAX_LISTEN];   /* cleartext HTTP/1.1 + h2 prior knowledge */
    int         n_listen_plain;
    const char *cert[EDGE_MAX_CERT_ARGS];   /* --cert, in order; the Nth --key is the Nth's key */
    const char *key[EDGE_MAX_CERT_ARGS];
    int         n_cert;             /* neither given nor --cert-dir: one pair, the default found */
    int         n_key;              /* beside the binary (an entry NULL when it was not found) */
    const char *cert_dir;           /* --cert-dir: every NAME.crt with its NAME.key */
    const char *cert_tried;         /* cert[0] NULL: the default paths tried, comma-separated */
    const char *key_tried;
    int         workers;            /* 0: one per CPU */
    int         test_only;          /* -t */
    int         tls_min;            /* 12 or 13 */
    long        lua_budget;         /* VM instructions per hook run */
    size_t      max_body;
    size_t      body_buffer;        /* request bodies up to this are read whole; larger ones stream */
    size_t      max_request_line;
    size_t      max_header_size;
    int         max_headers;
    int         h2_max_streams;     /* SETTINGS_MAX_CONCURRENT_STREAMS */
    double      handshake_timeout;
    double      header_timeout;
    double      keepalive_timeout;
    double      body_timeout;       /* between two reads of a request body */
    double      send_timeout;       /* between two writes that make progress */
    int         max_connections;    /* across all workers; accept pauses at it */
    size_t      lua_memory;         /* bytes per Lua VM; 0: no limit */
    double      drain_timeout;
    int         lua_max_timers;     /* pending edge.timer timers per worker */
    size_t      cache_size;         /* bytes */
    size_t      proxy_buffer;       /* edge.proxy's bytes held per response (the pipe's high mark) */
    size_t      cache_max_object;   /* largest entry stored, bytes; 0 until parsed: cache_size / 16 */
    double      cache_ttl;          /* seconds, when neither the script nor Cache-Control says */
    double      cache_grace;        /* stale-while-revalidate seconds, the same way */
    double      cache_keep;         /* stale-if-error seconds, the same way */
    double      cache_pass_ttl;     /* hit-for-pass marker lifetime; 0: none */
    double      coalesce_timeout;   /* seconds a miss waits for an identical one in progress */
    int         compress;           /* --compress on|off: gzip/brotli by Accept-Encoding (compress.h) */
    size_t      compress_min_size;  /* bodies smaller than this are sent as they are */
    int         max_requests;       /* in flight across all workers; 503 past it */
    const char *access_log;         /* "off", "-" (stdout) or a file */
    int         access_log_format;  /* EDGE_LOG_FORMAT_* */
    int         request_id_header;  /* add X-Request-Id to every response */
    edge_cidr_list trusted_proxies; /* peers whose X-Request-Id is reused */
    const char *admin;              /* admin listener address, NULL: off */
    const char *admin_token_file;   /* --admin-token-file, NULL: no token */
    /* --ticket-key-file, in order (the first encrypts), NULL-terminated;
     * none: random session ticket keys rotated every ticket_rotate seconds. */
    const char *ticket_key_files[EDGE_MAX_TICKET_KEY_FILES + 1];
    int         n_ticket_key_files;
    double      ticket_rotate;
} edge_config;

enum edge_log_format {
    EDGE_LOG_FORMAT_COMBINED = 0,      /* nginx's combined */
    EDGE_LOG_FORMAT_JSON = 1,
    EDGE_LOG_FORMAT_COMBINED_ID = 2    /* combined, then "request id" and the request time */
};

/* Fills cfg with the defaults. */
void edge_config_defaults(edge_config *cfg);

/* Parses argv into cfg and looks up the default certificate and key (see
 * cert_tried). Returns EDGE_OK to run, EDGE_DONE after -h/-V (exit 0),
 * or EDGE_ERROR after printing one line on stderr (exit 2). */
int edge_config_parse(edge_config *cfg, int argc, char **argv);

#endif
