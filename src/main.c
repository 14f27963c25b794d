/* edge: parse the command line, check the script and certificates, open the
 * listeners, run the workers, reload on SIGHUP and stop them on SIGTERM/SIGINT. */
#include "common.h"
#include "access_log.h"
#include "admin.h"
#include "admin_auth.h"
#include "cache.h"
#include "config.h"
#include "h2.h"
#include "listener.h"
#include "log.h"
#include "script.h"
#include "lua_timer.h"
#include "sd_notify.h"
#include "tls.h"
#include "tls_certs.h"
#include "tls_tickets.h"
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct edge_server {
    edge_config  cfg;
    SSL_CTX     *ssl_ctx;
    edge_cache  *cache;
    edge_worker *workers;
    int          n_workers;
    int         *fds;       /* [worker * EDGE_MAX_LISTENERS + address] */
    unsigned char plain[EDGE_MAX_LISTENERS];   /* per address: cleartext */
    int          n_addrs;
    edge_admin_auth *admin_auth;   /* --admin-token-file; NULL: none */
} edge_server;

/* Loads the script in a scratch VM: what -t and start-up check. */
static int check_script(const edge_config *cfg)
{
    edge_script s;
    char err[1024];
    if (edge_script_open(&s, cfg->script, cfg->lua_budget, NULL, 0, NULL, cfg->cache_ttl, err, sizeof(err)) != EDGE_OK) {
        fprintf(stderr, "edge: cannot load script %s: %s\n", cfg->script, err);
        return EDGE_ERROR;
    }
    edge_script_close(&s);
    return EDGE_OK;
}

/* The TLS listeners: -l, or the defaults when no listener at all was named
 * (only --listen-plain given means cleartext only, no certificate). */
static int uses_default_listeners(const edge_config *cfg)
{
    return cfg->n_listen == 0 && cfg->n_listen_plain == 0;
}

static int needs_tls(const edge_config *cfg)
{
    return cfg->n_listen > 0 || uses_default_listeners(cfg);
}

static const char *const default_listen[] = {"0.0.0.0:8443", "[::]:8443"};

/* -t: can each address be bound by this process? A running edge holding
 * them does not fail the check (test before a reload); the optional IPv6
 * default passes on a host without IPv6. */
static int check_addresses(const char *const *addrs, int n, const char *label, int ipv6_optional)
{
    for (int i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        char err[256];
        if (edge_listener_parse(addrs[i], &ss, &len) != EDGE_OK) {
            fprintf(stderr, "edge: invalid %saddress '%s'\n", label, addrs[i]);
            return EDGE_ERROR;
        }
        int e = edge_listener_check(&ss, len, label, err, sizeof(err));
        if (e == 0 || (ipv6_optional && ss.ss_family == AF_INET6 && e != EADDRINUSE)) continue;
        fprintf(stderr, "edge: %s\n", err);
        return EDGE_ERROR;
    }
    return EDGE_OK;
}

static int check_all_addresses(const edge_config *cfg)
{
    int rc = uses_default_listeners(cfg) ? check_addresses(default_listen, 2, "", 1)
                                         : check_addresses(cfg->listen, cfg->n_listen, "", 0);
    if (rc == EDGE_OK) rc = check_addresses(cfg->listen_plain, cfg->n_listen_plain, "", 0);
    if (rc == EDGE_OK && cfg->admin) rc = check_addresses(&cfg->admin, 1, "admin address ", 0);
    return rc;
}

/* The admin listener's rules (admin_auth.h): a token file needs --admin, a
 * non-loopback --admin needs a token file, whose first line is the token. */
static int open_admin_auth(const edge_config *cfg, edge_admin_auth **auth)
{
    char err[512];
    if (edge_admin_auth_open(cfg->admin, cfg->admin_token_file, auth, err, sizeof(err)) == EDGE_OK)
        return EDGE_OK;
    fprintf(stderr, "edge: %s\n", err);
    return EDGE_ERROR;
}

/* SIGHUP: a new token takes effect; a token file that went bad leaves the
 * old token in force, as a script that fails to load leaves the old script. */
static void reload_admin_auth(edge_admin_auth *auth)
{
    char err[512];
    if (auth == NULL) return;
    if (edge_admin_auth_reload(auth, err, sizeof(err)) == EDGE_OK)
        edge_log(EDGE_LOG_NOTICE, 0, "SIGHUP: admin token re-read from %s", edge_admin_auth_file(auth));
    else
        edge_log(EDGE_LOG_ERR, 0, "SIGHUP: %s; the previous admin token stays in force", err);
}

/* One line per certificate, at start and after each SIGHUP that loads them
 * (arg: the line's prefix). */
static void log_cert(const edge_tls_cert_info *c, void *arg)
{
    edge_log(EDGE_LOG_NOTICE, 0, "%scertificate %s (%s): %s%s", (const char *)arg, c->cert_file, c->key_type,
             c->names, c->is_default ? " [default]" : "");
}

static void print_cert(const edge_tls_cert_info *c, void *arg)
{
    EDGE_UNUSED(arg);
    printf("edge: certificate %s and key %s are valid (%s): %s%s\n", c->cert_file, c->key_file, c->key_type,
           c->names, c->is_default ? " [default]" : "");
}

/* SIGHUP: the certificates are read again into a new set, which new
 * connections use; a set that fails to load leaves the old one in force. */
static void reload_certs(edge_server *srv)
{
    char err[1024];
    if (srv->ssl_ctx == NULL) return;       /* cleartext listeners only */
    SSL_CTX *ctx = edge_tls_certs_load(&srv->cfg, log_cert, "SIGHUP: ", err, sizeof(err));
    if (ctx == NULL) {
        edge_log(EDGE_LOG_ERR, 0, "SIGHUP: certificates not reloaded, the previous ones stay in force: %s", err);
        return;
    }
    for (int i = 0; i < srv->n_workers; i++) edge_worker_set_ssl_ctx(&srv->workers[i], ctx);
    SSL_CTX_free(srv->ssl_ctx);
    srv->ssl_ctx = ctx;
}

/* The session ticket keys every worker shares (tls_tickets.h), before the
 * SSL_CTX that takes them: a bad --ticket-key-file fails the start. */
static int init_tickets(const edge_config *cfg)
{
    char err[512];
    if (edge_tls_tickets_init(cfg->ticket_key_files, cfg->ticket_rotate, err, sizeof(err)) == EDGE_OK)
        return EDGE_OK;
    fprintf(stderr, "edge: %s\n", err);
    return EDGE_ERROR;
}

/* SIGHUP: the ticket key files are re-read; one gone bad keeps the old keys. */
static void reload_tickets(const edge_config *cfg)
{
    char err[512];
    if (cfg->n_ticket_key_files == 0) return;
    if (edge_tls_tickets_reload(err, sizeof(err)) == EDGE_OK)
        edge_log(EDGE_LOG_NOTICE, 0, "SIGHUP: session ticket keys re-read (%s encrypts)", cfg->ticket_key_files[0]);
    else
        edge_log(EDGE_LOG_ERR, 0, "SIGHUP: %s; the previous session ticket keys stay in force", err);
}

/* -t: everything a start checks on its configuration, without serving, so
 * that a passing -t means the start will not fail on configuration. */
static int run_test(const edge_config *cfg)
{
    edge_script_set_memory_limit(cfg->lua_memory);
    edge_lua_timer_set_max(cfg->lua_max_timers);
    if (check_script(cfg) != EDGE_OK) return 1;
    printf("edge: script %s loads and returns its hooks\n", cfg->script);
    char err[1024];
    if (needs_tls(cfg)) {
        if (init_tickets(cfg) != EDGE_OK) return 1;
        SSL_CTX *ctx = edge_tls_certs_load(cfg, print_cert, NULL, err, sizeof(err));
        if (ctx == NULL) {
            fprintf(stderr, "edge: %s\n", err);
            return 1;
        }
        SSL_CTX_free(ctx);
        if (cfg->n_ticket_key_files)
            printf("edge: %d session ticket key file%s valid\n", cfg->n_ticket_key_files,
                   cfg->n_ticket_key_files == 1 ? " is" : "s are");
    } else {
        printf("edge: no TLS listener (only --listen-plain): no certificate needed\n");
    }
    if (edge_access_log_open(cfg->access_log, cfg->access_log_format, err, sizeof(err)) != EDGE_OK) {
        fprintf(stderr, "edge: %s\n", err);
        return 1;
    }
    edge_access_log_close();
    printf("edge: access log %s can be written\n", cfg->access_log);
    if (check_all_addresses(cfg) != EDGE_OK) return 1;
    printf("edge: listen%s addresses can be bound\n", cfg->admin ? " and admin" : "");
    edge_admin_auth *auth;
    if (open_admin_auth(cfg, &auth) != EDGE_OK) return 1;
    if (auth) printf("edge: admin token file %s holds a token\n", cfg->admin_token_file);
    edge_admin_auth_free(auth);
    printf("edge: configuration test is successful\n");
    return 0;
}

/* Opens one socket per worker for addr (SO_REUSEPORT). Port 0 takes the
 * port the first socket got, so every worker listens on the same one. */
static int open_address(edge_server *srv, int a, struct sockaddr_storage *ss, socklen_t len, int optional,
                        int plain)
{
    char err[256];
    int e = edge_listener_claim(ss, len, "", err, sizeof(err));
    if (e != 0) {
        if (optional && e != EADDRINUSE) return EDGE_DONE;
        fprintf(stderr, "edge: %s\n", err);
        return EDGE_ERROR;
    }
    for (int i = 0; i < srv->n_workers; i++) {
        int fd = edge_listener_open(ss, len, "", err, sizeof(err));
        if (fd < 0) {
            if (optional && i == 0) return EDGE_DONE;
            fprintf(stderr, "edge: %s\n", err);
            return EDGE_ERROR;
        }
        if (i == 0) getsockname(fd, (struct sockaddr *)ss, &len);
        srv->fds[i * EDGE_MAX_LISTENERS + a] = fd;
    }
    char name[80];
    edge_sockaddr_format(ss, name, sizeof(name));
    edge_log(EDGE_LOG_NOTICE, 0, "%s listening on %s%s (%d workers)", EDGE_SERVER, name,
             plain ? " cleartext" : "", srv->n_workers);
    return EDGE_OK;
}

/* Opens addrs[0..n) as listeners numbered from srv->n_addrs on. */
static int open_list(edge_server *srv, const char *const *addrs, int n, int plain, int ipv6_optional)
{
    for (int i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (edge_listener_parse(addrs[i], &ss, &len) != EDGE_OK) {
            fprintf(stderr, "edge: invalid listen address '%s': expected ADDR:PORT or [V6]:PORT\n", addrs[i]);
            return EDGE_ERROR;
        }
        int a = srv->n_addrs;
        /* The IPv6 default is best effort: not every host has IPv6. */
        int rc = open_address(srv, a, &ss, len, ipv6_optional && ss.ss_family == AF_INET6, plain);
        if (rc == EDGE_ERROR) return EDGE_ERROR;
        if (rc == EDGE_OK) srv->plain[srv->n_addrs++] = (unsigned char)plain;
    }
    return EDGE_OK;
}

static int open_listeners(edge_server *srv)
{
    const edge_config *cfg = &srv->cfg;
    srv->fds = edge_calloc((size_t)srv->n_workers * EDGE_MAX_LISTENERS, sizeof(int));
    for (int i = 0; i < srv->n_workers * EDGE_MAX_LISTENERS; i++) srv->fds[i] = -1;
    srv->n_addrs = 0;
    int rc = uses_default_listeners(cfg) ? open_list(srv, default_listen, 2, 0, 1)
                                         : open_list(srv, cfg->listen, cfg->n_listen, 0, 0);
    if (rc != EDGE_OK) return rc;
    return open_list(srv, cfg->listen_plain, cfg->n_listen_plain, 1, 0);
}

/* Fails before anything else starts when someone listens on the admin
 * address (edge_admin_start opens it once the workers run). */
static int claim_admin(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    if (edge_listener_parse(addr, &ss, &len) != EDGE_OK) return EDGE_ERROR;   /* checked by config */
    if (edge_listener_claim(&ss, len, "admin address ", err, sizeof(err)) == 0) return EDGE_OK;
    fprintf(stderr, "edge: %s\n", err);
    return EDGE_ERROR;
}

static int start_workers(edge_server *srv)
{
    char err[1024];
    for (int i = 0; i < srv->n_workers; i++) {
        const int *fds = &srv->fds[i * EDGE_MAX_LISTENERS];
        if (edge_worker_init(&srv->workers[i], i, &srv->cfg, srv->ssl_ctx, srv->cache, fds, srv->plain,
                             srv->n_addrs, err, sizeof(err)) != EDGE_OK) {
            fprintf(stderr, "edge: worker %d: %s\n", i, err);
            return EDGE_ERROR;
        }
        for (int a = 0; a < srv->n_addrs; a++) srv->fds[i * EDGE_MAX_LISTENERS + a] = -1;  /* the worker's now */
    }
    for (int i = 0; i < srv->n_workers; i++) {
        if (edge_worker_start(&srv->workers[i]) != EDGE_OK) {
            fprintf(stderr, "edge: cannot start worker thread %d\n", i);
            return EDGE_ERROR;
        }
    }
    return EDGE_OK;
}

/* The signals the main thread takes with sigwait. */
static void handled_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

/* The main thread only waits for signals; workers never see them. */
static void wait_for_stop(edge_server *srv)
{
    sigset_t set;
    handled_signals(&set);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGTERM || sig == SIGINT) {
            edge_log(EDGE_LOG_NOTICE, 0, "%s: finishing in-flight requests, then exiting",
                     sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return;
        }
        if (sig == SIGHUP) {
            edge_log(EDGE_LOG_NOTICE, 0, "SIGHUP: reloading %s in every worker", srv->cfg.script);
            reload_certs(srv);              /* before the wake-up that hands them over */
            edge_workers_reload(srv->workers, srv->n_workers);
            reload_admin_auth(srv->admin_auth);
            reload_tickets(&srv->cfg);
        } else {
            edge_log(EDGE_LOG_NOTICE, 0, "SIGUSR1: reopening the log files");
            edge_access_log_reopen();
        }
    }
}

static void block_signals(void)
{
    sigset_t set;
    handled_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);   /* inherited by every worker thread */
    signal(SIGPIPE, SIG_IGN);
}

static int default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static void shutdown_server(edge_server *srv, int started)
{
    for (int i = 0; i < started; i++) edge_worker_request_stop(&srv->workers[i]);
    for (int i = 0; i < started; i++) edge_worker_join(&srv->workers[i]);
    for (int i = 0; i < started; i++) edge_worker_free(&srv->workers[i]);
    free(srv->workers);
    edge_cache_free(srv->cache);
    free(srv->fds);
    SSL_CTX_free(srv->ssl_ctx);
    edge_h2_global_free();
    edge_access_log_close();
}

int main(int argc, char **argv)
{
    edge_server srv = {0};
    edge_config_defaults(&srv.cfg);
    int rc = edge_config_parse(&srv.cfg, argc, argv);
    if (rc == EDGE_DONE) return 0;
    if (rc != EDGE_OK) return 2;
    if (srv.cfg.test_only) return run_test(&srv.cfg);

    block_signals();
    edge_script_set_memory_limit(srv.cfg.lua_memory);
    edge_lua_timer_set_max(srv.cfg.lua_max_timers);
    if (check_script(&srv.cfg) != EDGE_OK) return 1;
    /* The checks that allocate nothing come first: a failure returns at once. */
    if (srv.cfg.admin && claim_admin(srv.cfg.admin) != EDGE_OK) return 1;
    char err[512];
    if (edge_access_log_open(srv.cfg.access_log, srv.cfg.access_log_format, err, sizeof(err)) != EDGE_OK) {
        fprintf(stderr, "edge: %s\n", err);
        return 1;
    }
    if (needs_tls(&srv.cfg)) {
        if (init_tickets(&srv.cfg) != EDGE_OK) return 1;
        srv.ssl_ctx = edge_tls_certs_load(&srv.cfg, log_cert, "", err, sizeof(err));
        if (srv.ssl_ctx == NULL) {
            fprintf(stderr, "edge: %s\n", err);
            return 1;
        }
    }
    /* exit, not return: what srv holds stays reachable (no leak report). */
    if (open_admin_auth(&srv.cfg, &srv.admin_auth) != EDGE_OK) exit(1);
    edge_h2_global_init();
    srv.cache = edge_cache_new(srv.cfg.cache_size);
    edge_cache_set_max_object(srv.cache, srv.cfg.cache_max_object);
    srv.n_workers = srv.cfg.workers ? srv.cfg.workers : default_workers();
    srv.workers = edge_calloc((size_t)srv.n_workers, sizeof(edge_worker));
    if (open_listeners(&srv) != EDGE_OK || start_workers(&srv) != EDGE_OK) {
        for (int i = 0; srv.fds && i < srv.n_workers * EDGE_MAX_LISTENERS; i++)
            if (srv.fds[i] >= 0) close(srv.fds[i]);
        exit(1);
    }
    if (srv.cfg.admin && edge_admin_start(srv.cfg.admin, srv.workers, srv.n_workers, srv.cache, srv.admin_auth,
                                          err, sizeof(err)) != EDGE_OK) {
        fprintf(stderr, "edge: %s\n", err);
        exit(1);
    }
    edge_sd_notify("READY=1");        /* systemd Type=notify: every worker listens */
    wait_for_stop(&srv);
    edge_sd_notify("STOPPING=1");
    edge_admin_stop();
    edge_admin_auth_free(srv.admin_auth);
    shutdown_server(&srv, srv.n_workers);
    edge_log(EDGE_LOG_NOTICE, 0, "exited cleanly");
    return 0;
}
