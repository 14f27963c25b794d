/* Command line parsing (getopt_long): every option has a long form. */
#include "config.h"
#include "size.h"
#include "common.h"
#include "listener.h"
#include "log.h"
#include "shared_dict.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: edge -s SCRIPT [options]\n"
    "\n"
    "  -s, --script FILE          Lua script returning { cache_key = fn, respond = fn } (required)\n"
    "  -l, --listen ADDR:PORT     listen address, repeatable; [::1]:8443 for IPv6\n"
    "                             (default 0.0.0.0:8443 and [::]:8443)\n"
    "      --listen-plain ADDR:PORT  cleartext listener (HTTP/1.1 and HTTP/2 prior knowledge)\n"
    "                             for use behind a TLS-terminating load balancer; repeatable\n"
    "      --cert FILE            TLS certificate chain, repeatable: the Nth --key is the\n"
    "                             Nth --cert's key; the first pair is the default for\n"
    "                             clients with no or an unknown SNI name (default server.crt\n"
    "                             in the first of BINDIR/certs, REPO/certs for\n"
    "                             REPO/build/*/edge, PREFIX/etc/edge for PREFIX/bin/edge,\n"
    "                             /etc/edge)\n"
    "      --key FILE             TLS private key (default server.key, looked up the same way)\n"
    "      --cert-dir DIR         every NAME.crt in DIR with its NAME.key; the names served\n"
    "                             come from each certificate (subjectAltName, else CN);\n"
    "                             without --cert, DIR/default.crt (else the first by name)\n"
    "                             is the default. All certificates are re-read on SIGHUP\n"
    "  -w, --workers N            worker threads (default: number of CPUs)\n"
    "  -t, --test                 check what a start checks (script, certificates when a TLS\n"
    "                             listener is used, addresses, access log), then exit\n"
    "      --tls-min 1.2|1.3      lowest TLS version accepted (default 1.2)\n"
    "      --ticket-key-file FILE session ticket key (48 or 80 bytes, nginx's format), repeatable:\n"
    "                             the first encrypts, all decrypt; re-read on SIGHUP (default:\n"
    "                             a random key shared by the workers, rotated)\n"
    "      --ticket-rotate S      period of the random ticket keys, also the ticket lifetime\n"
    "                             (default 3600)\n"
    "      --lua-budget N         VM instructions a hook may run (default 10000000)\n"
    "      --log-level LEVEL      error, warn, notice, info or debug (default notice)\n"
    "      --max-body SIZE        request body limit, 413 past it (default 1m)\n"
    "      --body-buffer SIZE     request bodies up to this are read whole before the script\n"
    "                             runs; larger ones stream (edge.proxy) (default 1m, at most\n"
    "                             --max-body)\n"
    "      --max-request-line SIZE   request line limit, 414 past it (default 8k)\n"
    "      --max-header-size SIZE    header block limit, 431 past it (default 16k)\n"
    "      --max-headers N        header field count limit, 431 past it (default 100)\n"
    "      --h2-max-streams N     HTTP/2 concurrent streams per connection (default 128)\n"
    "      --cache-size SIZE      response cache bound (default 64m)\n"
    "      --cache-ttl S          cache lifetime when neither the script nor Cache-Control\n"
    "                             gives one (default 60)\n"
    "      --cache-grace S        stale-while-revalidate when neither the script nor\n"
    "                             Cache-Control gives one: an expired entry is served\n"
    "                             while one refresh runs (default 0)\n"
    "      --cache-keep S         stale-if-error when neither the script nor Cache-Control\n"
    "                             gives one: an expired entry is served when the origin\n"
    "                             fails (default 0)\n"
    "      --cache-pass-ttl S     how long an uncacheable answer makes its key skip\n"
    "                             coalescing (hit-for-pass, default 120)\n"
    "      --cache-max-object BYTES  largest response stored; at most a sixteenth of\n"
    "                             --cache-size (default: that sixteenth, 4m)\n"
    "      --compress on|off      gzip/brotli for compressible types the client accepts (default on)\n"
    "      --compress-min-size SIZE  smaller bodies are not compressed (default 1k)\n"
    "      --coalesce-timeout S   how long a miss waits for an identical one in progress (default 5)\n"
    "      --max-requests N       requests in flight across all workers; 503 past it (default 25000)\n"
    "      --handshake-timeout S  TLS handshake timeout (default 10)\n"
    "      --header-timeout S     time to receive a whole request (default 10)\n"
    "      --keepalive-timeout S  idle keep-alive (and HTTP/2) connection timeout (default 75)\n"
    "      --body-timeout S       time between two reads of a request body (default 60)\n"
    "      --send-timeout S       time a client may take to accept more of a response (default 60)\n"
    "      --max-connections N    open client connections across workers; accepting pauses\n"
    "                             at the limit (default 25000)\n"
    "      --lua-memory SIZE      memory per Lua VM (one per worker); past it\n"
    "                             the hook fails with 500 (default 0: no limit)\n"
    "      --lua-max-timers N     pending edge.timer timers per worker; past it\n"
    "                             edge.timer.at/every return nil, err (default 1024)\n"
    "      --drain-timeout S      on SIGTERM, time in-flight requests get (default 30)\n"
    "      --admin ADDR:PORT      admin listener (plain HTTP: /metrics, /healthz, PURGE /cache),\n"
    "                             e.g. 127.0.0.1:9901 (default off)\n"
    "      --admin-token-file FILE   the admin token (the file's first line): /cache and\n"
    "                             /metrics then need Authorization: Bearer TOKEN; required\n"
    "                             when --admin is not a loopback address; re-read on SIGHUP\n"
    "      --access-log PATH      access log file, - for stdout, or off (default -)\n"
    "      --access-log-format F  combined, combined_id (combined + request id and request\n"
    "                             time) or json (default combined)\n"
    "      --request-id-header    send the request id as X-Request-Id in every response\n"
    "      --proxy-buffer SIZE    edge.proxy: response bytes held per request while the\n"
    "                             client is slower than the origin, 64k to 1m (default 256k)\n"
    "      --shared-dict NAME:SIZE   a shared dictionary (edge.shared.NAME) of SIZE bytes,\n"
    "                             shared by the workers and kept across reloads; repeatable\n"
    "      --trusted-proxies LIST addresses/CIDRs (comma-separated, repeatable) whose\n"
    "                             X-Request-Id is kept as the request id\n"
    "  -h, --help                 this help\n"
    "  -V, --version              print the version\n"
    "\n"
    "SIZE is a byte count with an optional k, m or g suffix (1k = 1024): 512, 16k, 1m, 2g.\n"
    "With only --listen-plain listeners there is no TLS listener and no certificate is needed.\n";

enum {
    OPT_CERT = 256, OPT_KEY, OPT_TLS_MIN, OPT_LUA_BUDGET, OPT_LOG_LEVEL, OPT_MAX_BODY,
    OPT_MAX_LINE, OPT_MAX_HSIZE, OPT_MAX_HEADERS, OPT_HS_TIMEOUT, OPT_HDR_TIMEOUT,
    OPT_KA_TIMEOUT, OPT_DRAIN_TIMEOUT, OPT_LISTEN_PLAIN, OPT_H2_STREAMS,
    OPT_CACHE_SIZE, OPT_CACHE_TTL, OPT_COALESCE_TIMEOUT, OPT_MAX_REQUESTS,
    OPT_ACCESS_LOG, OPT_ACCESS_LOG_FORMAT, OPT_ADMIN, OPT_BODY_TIMEOUT, OPT_SEND_TIMEOUT,
    OPT_MAX_CONNECTIONS, OPT_LUA_MEMORY, OPT_CACHE_MAX_OBJECT, OPT_REQUEST_ID_HEADER, OPT_PROXY_BUFFER,
    OPT_TRUSTED_PROXIES, OPT_BODY_BUFFER, OPT_CACHE_GRACE, OPT_CACHE_KEEP, OPT_CACHE_PASS_TTL,
    OPT_ADMIN_TOKEN_FILE, OPT_COMPRESS, OPT_COMPRESS_MIN_SIZE, OPT_SHARED_DICT, OPT_LUA_MAX_TIMERS,
    OPT_CERT_DIR,
    OPT_TICKET_KEY_FILE, OPT_TICKET_ROTATE
};

static const struct option long_options[] = {
    {"script", required_argument, NULL, 's'},
    {"listen", required_argument, NULL, 'l'},
    {"listen-plain", required_argument, NULL, OPT_LISTEN_PLAIN},
    {"h2-max-streams", required_argument, NULL, OPT_H2_STREAMS},
    {"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
    {"cache-ttl", required_argument, NULL, OPT_CACHE_TTL},
    {"cache-grace", required_argument, NULL, OPT_CACHE_GRACE},
    {"cache-keep", required_argument, NULL, OPT_CACHE_KEEP},
    {"cache-pass-ttl", required_argument, NULL, OPT_CACHE_PASS_TTL},
    {"cache-max-object", required_argument, NULL, OPT_CACHE_MAX_OBJECT},
    {"proxy-buffer", required_argument, NULL, OPT_PROXY_BUFFER},
    {"coalesce-timeout", required_argument, NULL, OPT_COALESCE_TIMEOUT},
    {"compress", required_argument, NULL, OPT_COMPRESS},
    {"compress-min-size", required_argument, NULL, OPT_COMPRESS_MIN_SIZE},
    {"max-requests", required_argument, NULL, OPT_MAX_REQUESTS},
    {"access-log", required_argument, NULL, OPT_ACCESS_LOG},
    {"admin", required_argument, NULL, OPT_ADMIN},
    {"admin-token-file", required_argument, NULL, OPT_ADMIN_TOKEN_FILE},
    {"body-timeout", required_argument, NULL, OPT_BODY_TIMEOUT},
    {"send-timeout", required_argument, NULL, OPT_SEND_TIMEOUT},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"lua-memory", required_argument, NULL, OPT_LUA_MEMORY},
    {"lua-max-timers", required_argument, NULL, OPT_LUA_MAX_TIMERS},
    {"access-log-format", required_argument, NULL, OPT_ACCESS_LOG_FORMAT},
    {"request-id-header", no_argument, NULL, OPT_REQUEST_ID_HEADER},
    {"trusted-proxies", required_argument, NULL, OPT_TRUSTED_PROXIES},
    {"shared-dict", required_argument, NULL, OPT_SHARED_DICT},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"cert-dir", required_argument, NULL, OPT_CERT_DIR},
    {"workers", required_argument, NULL, 'w'},
    {"test", no_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"tls-min", required_argument, NULL, OPT_TLS_MIN},
    {"ticket-key-file", required_argument, NULL, OPT_TICKET_KEY_FILE},
    {"ticket-rotate", required_argument, NULL, OPT_TICKET_ROTATE},
    {"lua-budget", required_argument, NULL, OPT_LUA_BUDGET},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"max-body", required_argument, NULL, OPT_MAX_BODY},
    {"body-buffer", required_argument, NULL, OPT_BODY_BUFFER},
    {"max-request-line", required_argument, NULL, OPT_MAX_LINE},
    {"max-header-size", required_argument, NULL, OPT_MAX_HSIZE},
    {"max-headers", required_argument, NULL, OPT_MAX_HEADERS},
    {"handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT},
    {"header-timeout", required_argument, NULL, OPT_HDR_TIMEOUT},
    {"keepalive-timeout", required_argument, NULL, OPT_KA_TIMEOUT},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {NULL, 0, NULL, 0}
};

void edge_config_defaults(edge_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->tls_min = 12;
    cfg->lua_budget = 10000000;
    cfg->max_body = 1024 * 1024;
    cfg->body_buffer = 1024 * 1024;
    cfg->max_request_line = 8192;
    cfg->max_header_size = 16384;
    cfg->max_headers = 100;
    cfg->h2_max_streams = 128;
    cfg->handshake_timeout = 10;
    cfg->header_timeout = 10;
    cfg->keepalive_timeout = 75;
    cfg->body_timeout = 60;
    cfg->send_timeout = 60;
    cfg->max_connections = 25000;
    cfg->drain_timeout = 30;
    cfg->lua_max_timers = 1024;
    cfg->cache_size = 64u << 20;
    cfg->cache_ttl = 60;
    cfg->cache_pass_ttl = 120;
    cfg->proxy_buffer = 256 * 1024;
    cfg->coalesce_timeout = 5;
    cfg->compress = 1;
    cfg->compress_min_size = 1024;
    cfg->max_requests = 25000;
    cfg->access_log = "-";
    cfg->ticket_rotate = 3600;
}

#define MAX_SIZE ((size_t)1 << 40)   /* 1 TiB: any size option's upper bound */

static int bad_value(const char *opt, const char *val, const char *want)
{
    fprintf(stderr, "edge: invalid value '%s' for --%s: expected %s\n", val, opt, want);
    return EDGE_ERROR;
}

/* Parses a whole decimal integer in [min, max]. */
static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max) return EDGE_ERROR;
    *out = v;
    return EDGE_OK;
}

/* Parses a byte count in [min, max]: digits with an optional k, m or g
 * suffix in either case (powers of 1024: 1k = 1024). */
static int parse_size(const char *s, size_t min, size_t max, size_t *out)
{
    size_t v;
    if (edge_parse_size(s, &v) != EDGE_OK || v < min || v > max) return EDGE_ERROR;
    *out = v;
    return EDGE_OK;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v > 0) || v > 86400 * 365) return EDGE_ERROR;
    *out = v;
    return EDGE_OK;
}

/* Seconds, 0 allowed (a lifetime that may be off). */
static int parse_seconds_or_zero(const char *s, double *out)
{
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return EDGE_OK;
    }
    return parse_seconds(s, out);
}

/* --shared-dict NAME:SIZE defines the dictionary at once: dictionaries are
 * the process's (shared_dict.h), and the script, loaded later, finds it. */
static int define_shared_dict(const char *arg)
{
    const char *colon = strrchr(arg, ':');
    char name[128], err[256];
    size_t size;
    if (colon == NULL || (size_t)(colon - arg) >= sizeof(name) || edge_parse_size(colon + 1, &size))
        return bad_value("shared-dict", arg, "NAME:SIZE, e.g. limits:10m");
    memcpy(name, arg, (size_t)(colon - arg));
    name[colon - arg] = '\0';
    if (edge_shdict_define(name, size, err, sizeof(err)) == NULL) {
        fprintf(stderr, "edge: invalid value '%s' for --shared-dict: %s\n", arg, err);
        return EDGE_ERROR;
    }
    return EDGE_OK;
}

static int apply_option(edge_config *cfg, int opt, const char *arg)
{
    long v;
    const char *name = NULL;
    for (const struct option *o = long_options; o->name; o++)
        if (o->val == opt) name = o->name;

    switch (opt) {
    case 's': cfg->script = arg; return EDGE_OK;
    case 'l':
    case OPT_LISTEN_PLAIN: {
        struct sockaddr_storage ss;
        socklen_t len;
        const char **list = opt == 'l' ? cfg->listen : cfg->listen_plain;
        int *n = opt == 'l' ? &cfg->n_listen : &cfg->n_listen_plain;
        if (edge_listener_parse(arg, &ss, &len) != EDGE_OK)
            return bad_value(name, arg, "ADDR:PORT, [V6]:PORT or :PORT");
        if (*n == EDGE_MAX_LISTEN) return bad_value(name, arg, "at most 16 addresses");
        list[(*n)++] = arg;
        return EDGE_OK;
    }
    case OPT_CACHE_SIZE:
        return parse_size(arg, 0, MAX_SIZE, &cfg->cache_size) ? bad_value(name, arg, "bytes, e.g. 64m") : EDGE_OK;
    case OPT_CACHE_MAX_OBJECT:
        if (parse_size(arg, 1, MAX_SIZE, &cfg->cache_max_object))
            return bad_value(name, arg, "bytes > 0, e.g. 1m");
        return EDGE_OK;
    case OPT_PROXY_BUFFER:
        if (parse_size(arg, 64 * 1024, 1024 * 1024, &cfg->proxy_buffer))
            return bad_value(name, arg, "bytes from 64k to 1m");
        return EDGE_OK;
    case OPT_CACHE_TTL:
        return parse_seconds(arg, &cfg->cache_ttl) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    case OPT_CACHE_GRACE:
        return parse_seconds_or_zero(arg, &cfg->cache_grace) ? bad_value(name, arg, "seconds >= 0") : EDGE_OK;
    case OPT_CACHE_KEEP:
        return parse_seconds_or_zero(arg, &cfg->cache_keep) ? bad_value(name, arg, "seconds >= 0") : EDGE_OK;
    case OPT_CACHE_PASS_TTL:
        return parse_seconds_or_zero(arg, &cfg->cache_pass_ttl) ? bad_value(name, arg, "seconds >= 0") : EDGE_OK;
    case OPT_COALESCE_TIMEOUT:
        return parse_seconds(arg, &cfg->coalesce_timeout) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    case OPT_COMPRESS:
        if (strcmp(arg, "on") == 0) cfg->compress = 1;
        else if (strcmp(arg, "off") == 0) cfg->compress = 0;
        else return bad_value(name, arg, "on or off");
        return EDGE_OK;
    case OPT_COMPRESS_MIN_SIZE:
        return parse_size(arg, 0, MAX_SIZE, &cfg->compress_min_size) ? bad_value(name, arg, "bytes, e.g. 1k") : EDGE_OK;
    case OPT_MAX_REQUESTS:
        if (parse_long(arg, 1, 10000000, &v)) return bad_value(name, arg, "1 to 10000000");
        cfg->max_requests = (int)v;
        return EDGE_OK;
    case OPT_ACCESS_LOG: cfg->access_log = arg; return EDGE_OK;
    case OPT_BODY_TIMEOUT:
        return parse_seconds(arg, &cfg->body_timeout) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    case OPT_SEND_TIMEOUT:
        return parse_seconds(arg, &cfg->send_timeout) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    case OPT_MAX_CONNECTIONS:
        if (parse_long(arg, 1, 10000000, &v)) return bad_value(name, arg, "1 to 10000000");
        cfg->max_connections = (int)v;
        return EDGE_OK;
    case OPT_LUA_MEMORY:
        return parse_size(arg, 0, MAX_SIZE, &cfg->lua_memory) ? bad_value(name, arg, "bytes, e.g. 8m") : EDGE_OK;
    case OPT_LUA_MAX_TIMERS:
        if (parse_long(arg, 0, 1000000, &v)) return bad_value(name, arg, "0 to 1000000");
        cfg->lua_max_timers = (int)v;
        return EDGE_OK;
    case OPT_ADMIN: {
        struct sockaddr_storage ss;
        socklen_t len;
        if (edge_listener_parse(arg, &ss, &len) != EDGE_OK) return bad_value(name, arg, "ADDR:PORT");
        cfg->admin = arg;
        return EDGE_OK;
    }
    case OPT_ADMIN_TOKEN_FILE: cfg->admin_token_file = arg; return EDGE_OK;   /* read at start-up (admin_auth.c) */
    case OPT_ACCESS_LOG_FORMAT:
        if (strcmp(arg, "combined") == 0) cfg->access_log_format = EDGE_LOG_FORMAT_COMBINED;
        else if (strcmp(arg, "combined_id") == 0) cfg->access_log_format = EDGE_LOG_FORMAT_COMBINED_ID;
        else if (strcmp(arg, "json") == 0) cfg->access_log_format = EDGE_LOG_FORMAT_JSON;
        else return bad_value(name, arg, "combined, combined_id or json");
        return EDGE_OK;
    case OPT_REQUEST_ID_HEADER: cfg->request_id_header = 1; return EDGE_OK;
    case OPT_TRUSTED_PROXIES:
        if (edge_cidr_list_add(&cfg->trusted_proxies, arg) != EDGE_OK)
            return bad_value(name, arg, "addresses or CIDRs, e.g. 10.0.0.0/8,::1 (at most 64)");
        return EDGE_OK;
    case OPT_H2_STREAMS:
        if (parse_long(arg, 1, 100000, &v)) return bad_value(name, arg, "1 to 100000");
        cfg->h2_max_streams = (int)v;
        return EDGE_OK;
    case OPT_SHARED_DICT: return define_shared_dict(arg);
    case OPT_CERT:
    case OPT_KEY: {
        int *n = opt == OPT_CERT ? &cfg->n_cert : &cfg->n_key;
        if (*n == EDGE_MAX_CERT_ARGS) return bad_value(name, arg, "at most 64 of them (use --cert-dir)");
        (opt == OPT_CERT ? cfg->cert : cfg->key)[(*n)++] = arg;
        return EDGE_OK;
    }
    case OPT_CERT_DIR: cfg->cert_dir = arg; return EDGE_OK;   /* read by tls_certs.c */
    case 't': cfg->test_only = 1; return EDGE_OK;
    case 'w':
        if (parse_long(arg, 1, 1024, &v)) return bad_value(name, arg, "a number from 1 to 1024");
        cfg->workers = (int)v;
        return EDGE_OK;
    case OPT_TLS_MIN:
        if (strcmp(arg, "1.2") == 0) cfg->tls_min = 12;
        else if (strcmp(arg, "1.3") == 0) cfg->tls_min = 13;
        else return bad_value(name, arg, "1.2 or 1.3");
        return EDGE_OK;
    case OPT_TICKET_KEY_FILE:   /* read at start-up (tls_tickets.c), which names a bad file */
        if (cfg->n_ticket_key_files == EDGE_MAX_TICKET_KEY_FILES) return bad_value(name, arg, "at most 16 files");
        cfg->ticket_key_files[cfg->n_ticket_key_files++] = arg;
        return EDGE_OK;
    case OPT_TICKET_ROTATE:
        if (parse_long(arg, 1, 7 * 86400, &v)) return bad_value(name, arg, "whole seconds from 1 to 604800");
        cfg->ticket_rotate = (double)v;
        return EDGE_OK;
    case OPT_LUA_BUDGET:
        if (parse_long(arg, 1000, LONG_MAX, &v)) return bad_value(name, arg, "a number >= 1000");
        cfg->lua_budget = v;
        return EDGE_OK;
    case OPT_LOG_LEVEL:
        if ((v = edge_log_parse_level(arg)) < 0)
            return bad_value(name, arg, "error, warn, notice, info or debug");
        edge_log_level = (int)v;
        return EDGE_OK;
    case OPT_MAX_BODY:
        return parse_size(arg, 0, MAX_SIZE, &cfg->max_body) ? bad_value(name, arg, "bytes, e.g. 1m") : EDGE_OK;
    case OPT_BODY_BUFFER:
        return parse_size(arg, 0, MAX_SIZE, &cfg->body_buffer) ? bad_value(name, arg, "bytes, e.g. 1m") : EDGE_OK;
    case OPT_MAX_LINE:
        return parse_size(arg, 64, 1u << 20, &cfg->max_request_line)
                   ? bad_value(name, arg, "64 to 1m bytes") : EDGE_OK;
    case OPT_MAX_HSIZE:
        return parse_size(arg, 256, 1u << 24, &cfg->max_header_size)
                   ? bad_value(name, arg, "256 to 16m bytes") : EDGE_OK;
    case OPT_MAX_HEADERS:
        if (parse_long(arg, 1, 10000, &v)) return bad_value(name, arg, "1 to 10000");
        cfg->max_headers = (int)v;
        return EDGE_OK;
    case OPT_HS_TIMEOUT:
        return parse_seconds(arg, &cfg->handshake_timeout) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    case OPT_HDR_TIMEOUT:
        return parse_seconds(arg, &cfg->header_timeout) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    case OPT_KA_TIMEOUT:
        return parse_seconds(arg, &cfg->keepalive_timeout) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    case OPT_DRAIN_TIMEOUT:
        return parse_seconds(arg, &cfg->drain_timeout) ? bad_value(name, arg, "seconds > 0") : EDGE_OK;
    }
    return EDGE_ERROR;
}

/* An entry lives in one of the cache's 16 shards, so none can be larger than
 * a shard's share of --cache-size. Unset: that share. */
static int check_cache_max_object(edge_config *cfg)
{
    size_t share = cfg->cache_size / 16;
    if (cfg->cache_max_object == 0) cfg->cache_max_object = share;
    if (cfg->cache_max_object <= share) return EDGE_OK;
    fprintf(stderr, "edge: --cache-max-object %zu is larger than a sixteenth of --cache-size (%zu bytes): "
            "the cache could not store such a response\n", cfg->cache_max_object, share);
    return EDGE_ERROR;
}

#define DEFAULT_DIR_MAX (PATH_MAX + 16)

/* Cuts the last component off path (in place); returns that component. */
static const char *cut_last(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash == NULL) return "";
    *slash = '\0';
    return slash + 1;
}

/* Fills dirs with where the default certificate and key are looked up, in
 * order, from the binary's real path (never the working directory, so a start
 * from anywhere finds the same files): BINDIR/certs (REPO/edge), REPO/certs
 * (REPO/build/KIND/edge), PREFIX/etc/edge (PREFIX/bin/edge), /etc/edge.
 * Returns how many. */
static int default_dirs(char dirs[][DEFAULT_DIR_MAX])
{
    int n = 0;
    char bin[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", bin, sizeof(bin) - 1);
    if (len > 0) {
        bin[len] = '\0';
        cut_last(bin);                                   /* BINDIR */
        snprintf(dirs[n++], DEFAULT_DIR_MAX, "%s/certs", bin);
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s", bin);
        const char *bindir_name = cut_last(parent);      /* parent: PREFIX or REPO/build */
        if (strcmp(bindir_name, "bin") == 0) snprintf(dirs[n++], DEFAULT_DIR_MAX, "%s/etc/edge", parent);
        if (strcmp(cut_last(parent), "build") == 0) snprintf(dirs[n++], DEFAULT_DIR_MAX, "%s/certs", parent);
    }
    snprintf(dirs[n++], DEFAULT_DIR_MAX, "/etc/edge");
    return n;
}

typedef struct default_file {
    char path[DEFAULT_DIR_MAX + 16];
    char tried[4 * (DEFAULT_DIR_MAX + 16)];
} default_file;

/* Returns the first existing DIR/name of the default directories, or NULL
 * with the paths tried (comma-separated) in f->tried. */
static const char *resolve_default(const char *name, default_file *f)
{
    char dirs[4][DEFAULT_DIR_MAX];
    int n = default_dirs(dirs);
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        snprintf(f->path, sizeof(f->path), "%.*s/%.15s", (int)DEFAULT_DIR_MAX - 1, dirs[i], name);
        if (access(f->path, F_OK) == 0) return f->path;
        used += (size_t)snprintf(f->tried + used, sizeof(f->tried) - used, "%s%s", i ? ", " : "", f->path);
    }
    return NULL;
}

/* Without --cert-dir, a lone --cert or --key (or neither) is one pair whose
 * missing half is the default beside the binary, as before certificates
 * were repeatable. Other count mismatches are the loader's error
 * (tls_certs.c), which fails the start. */
static void resolve_default_paths(edge_config *cfg)
{
    static default_file cert, key;
    if (cfg->cert_dir || cfg->n_cert > 1 || cfg->n_key > 1) return;
    if (cfg->n_cert == 0) {
        if ((cfg->cert[0] = resolve_default("server.crt", &cert)) == NULL) cfg->cert_tried = cert.tried;
        cfg->n_cert = 1;
    }
    if (cfg->n_key == 0) {
        if ((cfg->key[0] = resolve_default("server.key", &key)) == NULL) cfg->key_tried = key.tried;
        cfg->n_key = 1;
    }
}

int edge_config_parse(edge_config *cfg, int argc, char **argv)
{
    int opt;
    opterr = 0;  /* we print our own one-line message */
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":s:l:w:thV", long_options, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage_text, stdout);
            return EDGE_DONE;
        }
        if (opt == 'V') {
            printf("edge %s\n", EDGE_VERSION);
            return EDGE_DONE;
        }
        if (opt == '?' || opt == ':') {
            const char *what = opt == '?' ? "unknown option" : "missing value for option";
            if (optopt) fprintf(stderr, "edge: %s '-%c' (see edge -h)\n", what, optopt);
            else fprintf(stderr, "edge: %s '%s' (see edge -h)\n", what, argv[optind - 1]);
            return EDGE_ERROR;
        }
        if (apply_option(cfg, opt, optarg) != EDGE_OK) return EDGE_ERROR;
    }
    if (optind < argc) {
        fprintf(stderr, "edge: unexpected argument '%s' (see edge -h)\n", argv[optind]);
        return EDGE_ERROR;
    }
    if (check_cache_max_object(cfg) != EDGE_OK) return EDGE_ERROR;
    if (cfg->body_buffer > cfg->max_body) cfg->body_buffer = cfg->max_body;   /* never more than is allowed */
    if (cfg->script == NULL) {
        fprintf(stderr, "edge: no script given: edge -s SCRIPT (see edge -h)\n");
        return EDGE_ERROR;
    }
    resolve_default_paths(cfg);
    return EDGE_OK;
}
