/* TLS session ticket keys, process-global: every worker and every server
 * SSL_CTX encrypts and decrypts tickets with the same keys, so a session made
 * on one worker resumes on any other, and on another edge started with the
 * same --ticket-key-file (nginx's ssl_session_ticket_key file format).
 * Thread-safe: workers handshake concurrently; the main thread reloads. */
#ifndef EDGE_TLS_TICKETS_H
#define EDGE_TLS_TICKETS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* At most this many --ticket-key-file (nginx has no bound; a key ring of a
 * few files is what operators rotate through). */
#define EDGE_TICKET_MAX_FILES 16

/* The default period of the automatic keys (no files), seconds. */
#define EDGE_TICKET_ROTATE_DEFAULT 3600.0

/* files: NULL-terminated list of --ticket-key-file paths, kept by pointer
 * (they must live as long as the process: argv does). Empty: a random key
 * now, replaced every rotate_seconds, each key decrypting for one more
 * period. Files: 48 or 80 bytes each (nginx's format); the first encrypts new
 * tickets, all decrypt. Returns EDGE_OK, or EDGE_ERROR with a message naming
 * the file and the sizes accepted. Called once at start, before any attach. */
int edge_tls_tickets_init(const char *const *files, double rotate_seconds, char *err, size_t n);

/* Installs the ticket key callback on a server SSL_CTX (every ctx made by
 * tls.c). With automatic keys it also sets the ctx's session lifetime to the
 * rotation period, so that a ticket outlives neither of its key's periods. */
void edge_tls_tickets_attach(SSL_CTX *ctx);

/* SIGHUP: re-reads the files; a bad file keeps every old key in force and
 * says why in err. EDGE_OK with err "" when there are no files (automatic
 * keys rotate on their own). */
int edge_tls_tickets_reload(char *err, size_t n);

#endif
