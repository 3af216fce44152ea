/* braid: TLS as a layer between a transport and a protocol (Twisted's
 * twisted.protocols.tls), built on OpenSSL 3 when braid is configured with
 * -Dtls=enabled (or auto and OpenSSL was found).
 *
 * How it works: the TLS layer is the lower transport's protocol and is
 * itself a transport (the same braid_transport_t API) for your protocol.
 * OpenSSL never sees a socket: ciphertext goes through memory BIOs, so TLS
 * runs over any transport (TCP, Unix, the memory test transport) on any
 * poller, and a protocol cannot tell it is there.
 *
 * Handshake completion: connection_made is delayed until the handshake has
 * completed (and the peer was verified), so inside connection_made the
 * negotiated ALPN protocol, the SNI name and the peer certificate can be
 * read. A handshake that fails ends in connection_lost(BRAID_EPROTO)
 * without connection_made (as a failed connect does); braid_tls_error()
 * then says why, with OpenSSL's text (for a refused certificate,
 * X509_verify_cert_error_string's, e.g. "certificate has expired"), and the
 * same text is logged (domain "tls", WARN on clients, INFO on servers,
 * which meet garbage from the network routinely). Server side, a wrapped
 * factory builds your protocol only once the handshake has succeeded, so
 * failed handshakes never reach it.
 *
 * Writes made before the handshake completes are kept and sent after it.
 * Closing: braid_transport_close sends close_notify, flushes, then closes
 * the lower transport (it does not wait for the peer's close_notify, as
 * RFC 8446 6.1 allows), within the context's close timeout
 * (braid_tls_context_set_close_timeout); abort drops the connection
 * without close_notify;
 * shutdown_write sends close_notify and half-closes. The peer's
 * close_notify is your eof_received (or a close, when you have none). An
 * end of input WITHOUT close_notify is a truncation attack or a broken
 * peer: connection_lost(BRAID_EPROTO), unless the context is lenient
 * (braid_tls_context_set_lenient_eof), when it is an ordinary EOF.
 *
 * Flow control: your pause_writing/resume_writing follow the TLS
 * transport's queue, which counts plaintext waiting for the handshake plus
 * the lower transport's queued ciphertext; pause_reading/resume_reading
 * pause the lower transport.
 *
 * Built without TLS, every function below that can fail returns
 * BRAID_ENOTSUP and logs "braid was built without TLS support".
 */
#ifndef BRAID_TLS_H
#define BRAID_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "braid/endpoint.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether this build has TLS. */
bool braid_tls_available(void);

/* ------------------------------------------------------------------------
 * Contexts: configuration shared by many connections
 * ------------------------------------------------------------------------ */

typedef struct braid_tls_context braid_tls_context_t;

typedef enum braid_tls_role {
  BRAID_TLS_CLIENT = 0,
  BRAID_TLS_SERVER = 1
} braid_tls_role;

/* A context for one role, with safe defaults: TLS 1.2 and 1.3 only,
 * forward-secret AEAD cipher suites only (see braid_tls_context_set_ciphers),
 * servers choosing by their own preference order, renegotiation off,
 * compression off, no early data, a 10 s handshake timeout; clients verify
 * the server against the system's CA store and the host name given per
 * connection; servers do not ask for client certificates. Clients keep a
 * session cache keyed by server name (resumption; TLS 1.3 tickets and
 * TLS 1.2 sessions), servers issue tickets.
 *
 * A context is reference-counted: connections hold a reference, so
 * braid_tls_context_free may be called while they run. It is not
 * thread-safe (the client session cache changes as connections run): use
 * one per reactor. */
int braid_tls_context_create(braid_tls_context_t **out, braid_tls_role role);
void braid_tls_context_free(braid_tls_context_t *ctx);

/* The certificate chain (leaf first, PEM) and its private key (PEM). From
 * files, or from memory. BRAID_EINVAL with an "tls" ERROR log naming
 * OpenSSL's reason when they do not load or do not match. */
int braid_tls_context_use_certificate_file(braid_tls_context_t *ctx,
                                           const char *chain_file,
                                           const char *key_file);
int braid_tls_context_use_certificate_mem(braid_tls_context_t *ctx,
                                          const void *chain_pem,
                                          size_t chain_len, const void *key_pem,
                                          size_t key_len);

/* Trust anchors for verifying the peer: a PEM bundle file and/or a hashed
 * directory (c_rehash). Both NULL: the system default store (this is what
 * a client uses when this is never called). */
int braid_tls_context_load_ca(braid_tls_context_t *ctx, const char *file,
                              const char *dir);
int braid_tls_context_load_ca_mem(braid_tls_context_t *ctx, const void *pem,
                                  size_t len);

/* Verify the peer. Clients: on by default (and the host name is checked);
 * turning it off is for tests only. Servers: off by default; on asks for a
 * client certificate and refuses clients without a valid one. */
int braid_tls_context_set_verify(braid_tls_context_t *ctx, bool on);

/* ALPN, as a list of protocol names ("h2", "http/1.1"), most preferred
 * first. Clients offer them; servers pick the first of theirs the client
 * offers (no overlap: the handshake goes on without ALPN). */
int braid_tls_context_set_alpn(braid_tls_context_t *ctx,
                               const char *const *protos, size_t n);

/* Minimum protocol version: 0x0303 (TLS 1.2, the default) or 0x0304
 * (TLS 1.3). */
#define BRAID_TLS_1_2 0x0303
#define BRAID_TLS_1_3 0x0304
int braid_tls_context_set_min_version(braid_tls_context_t *ctx, int version);

/* The handshake timeout, in ns (0: none). A handshake that has not
 * completed this long after the connection came up (after braid_tls_start
 * for STARTTLS) ends: the lower transport is aborted, a server never
 * builds the protocol, a client's protocol gets connection_lost
 * (BRAID_ETIMEDOUT) without connection_made, and braid_tls_error() says
 * "handshake timed out". It is what bounds the cost of a peer that
 * connects and then sends nothing, half a hello, or stops halfway: before
 * the handshake there is no protocol, so no protocol timeout can run. It
 * applies to connections started after the call; the connect itself has
 * its own timeout (braid_connect_options).
 *
 * The default, 10 s: a handshake takes one round trip (TLS 1.3) or two
 * (TLS 1.2) plus some milliseconds of computing, so even a 1 s round trip
 * with a lost segment or two (TCP's first retransmission comes after 1 s,
 * RFC 6298 2.1) finishes well inside it; and it matches the HTTP server's
 * default header timeout, so a silent peer costs no longer before the
 * handshake than after it. */
#define BRAID_TLS_HANDSHAKE_TIMEOUT BRAID_SEC(10)
int braid_tls_context_set_handshake_timeout(braid_tls_context_t *ctx,
                                            uint64_t ns);
uint64_t braid_tls_context_handshake_timeout(const braid_tls_context_t *ctx);

/* The close timeout, in ns (0: none). After braid_transport_close (and
 * after a failure whose alert is being sent), the TLS layer waits for the
 * lower transport to write out the last records and the close_notify and
 * close. If the peer takes no byte of that output for this long, the
 * lower transport is aborted: connection_lost(BRAID_ETIMEDOUT) (or the
 * failure's own reason), and braid_tls_error() says "close timed out".
 * It is what bounds the cost of a peer that stops reading once we closed:
 * after the close there is no protocol timer left to do it. A slow peer
 * that still reads is not cut off: every byte it takes restarts the
 * clock (the abort comes between 1 and 1.25 timeouts after the last
 * one). braid waits for no close_notify from the peer, so a peer that
 * never answers ours costs nothing. The state of a connection that is
 * open (after the handshake, before the close, also half-closed) has no
 * timeout of its own: the protocol above owns its idle timeouts. It
 * applies to connections started after the call.
 *
 * The default, 5 s: an orderly close needs the peer to read what is
 * queued, which on a live connection moves within a round trip or two
 * (a TCP retransmission or two after a loss); five seconds without a
 * single byte taken is a peer that stopped reading, not a slow one. */
#define BRAID_TLS_CLOSE_TIMEOUT BRAID_SEC(5)
int braid_tls_context_set_close_timeout(braid_tls_context_t *ctx,
                                        uint64_t ns);
uint64_t braid_tls_context_close_timeout(const braid_tls_context_t *ctx);

/* Cipher suites and key exchange groups, as OpenSSL lists
 * ("A:B:C", names as `openssl ciphers -v` prints them). BRAID_EINVAL, with
 * a "tls" ERROR log naming OpenSSL's reason, when nothing usable is left.
 *
 * set_ciphers: the TLS 1.2 suites. Default: ECDHE key exchange with
 *   AES-GCM or ChaCha20-Poly1305 (ECDSA and RSA certificates): forward
 *   secrecy (a stolen key does not decrypt recorded traffic) and AEAD
 *   only, so no static-RSA key exchange (no forward secrecy, and the
 *   Bleichenbacher/ROBOT family) and no CBC (padding oracles: Lucky13).
 *   Every current browser and TLS library offers them.
 * set_ciphersuites: the TLS 1.3 suites. Default: TLS_AES_128_GCM_SHA256,
 *   TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256 (all AEAD and
 *   forward-secret by design).
 * set_groups: the key exchange groups ("X25519:P-256"). Default:
 *   OpenSSL's, all forward-secret, which follows new releases.
 * A server picks by its own order (the order of these lists), except that
 * ChaCha20 wins for a client that lists it first (such a client usually
 * lacks AES hardware). */
int braid_tls_context_set_ciphers(braid_tls_context_t *ctx, const char *list);
int braid_tls_context_set_ciphersuites(braid_tls_context_t *ctx,
                                       const char *list);
int braid_tls_context_set_groups(braid_tls_context_t *ctx, const char *list);

/* Accept an end of input without close_notify as a clean EOF (some HTTP/1
 * peers close that way; the application must then detect truncation
 * itself, e.g. with Content-Length). */
int braid_tls_context_set_lenient_eof(braid_tls_context_t *ctx, bool on);

/* Servers: pick a context by the SNI name the client sent. Return the
 * context to use (its certificate; its ALPN list and verification
 * settings apply too), or NULL to keep this one. `name` is NULL when the
 * client sent none. The returned context must stay alive while the
 * connection runs (keep it alongside this one). */
typedef braid_tls_context_t *(*braid_tls_sni_cb)(void *arg, const char *name);
int braid_tls_context_set_sni_cb(braid_tls_context_t *ctx, braid_tls_sni_cb cb,
                                 void *arg);

/* Early data (TLS 1.3 0-RTT) stays off: replayable data needs support in
 * the protocol, which braid does not offer yet. BRAID_ENOTSUP for on. */
int braid_tls_context_set_early_data(braid_tls_context_t *ctx, bool on);

/* The OpenSSL SSL_CTX *, for settings this API does not cover. Its app
 * data (SSL_CTX_set_app_data) and, on connections, the SSL's app data are
 * braid's: leave them alone. */
void *braid_tls_context_native(braid_tls_context_t *ctx);

/* ------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------ */

/* Connect to `addr` and run TLS as a client over the connection. `p` sees
 * connection_made after the handshake, or connection_lost with the connect
 * or handshake error. `server_name` is sent as SNI (unless it is an IP
 * address, which RFC 6066 forbids) and is the name (or IP address) the
 * certificate must match; it is required while verification is on. */
int braid_tls_connect(braid_reactor_t *r, const braid_addr_t *addr,
                      const braid_connect_options *opts,
                      braid_tls_context_t *ctx, const char *server_name,
                      braid_protocol_t *p);

/* A factory that runs TLS (server side, with `ctx`) on every connection
 * and builds the protocol with `inner` once the handshake succeeded. Give
 * it to braid_listen.
 *
 * Ownership: a connection belongs to the returned factory while its
 * handshake runs (it has no protocol of yours yet), and to your protocol
 * from the moment `inner` built it. braid_tls_factory_free aborts the
 * handshakes still in progress (their peers see a reset; `inner` is never
 * called for them), so `inner` and whatever owns it may be freed right
 * after it. Close the listener first (it calls the factory), then free the
 * factory, then `inner`'s owner. A "tls:" endpoint listener
 * (braid/endpoint.h) does all this itself when it is closed.
 * braid_tls_factory_handshakes says how many handshakes are in progress. */
int braid_tls_wrap_factory(braid_factory_t *inner, braid_tls_context_t *ctx,
                           braid_factory_t **out);
size_t braid_tls_factory_handshakes(const braid_factory_t *f);
void braid_tls_factory_free(braid_factory_t *f);

/* STARTTLS: upgrade an existing plain connection in place (SMTP, IMAP,
 * POP3, XMPP, LDAP...). The role comes from ctx. From this call on, the
 * TLS layer is `lower`'s protocol; `p` (the protocol that was on `lower`,
 * or another one) is attached to the TLS transport (*out, also stored in
 * p->transport at once) and sees connection_made(tls) a second time when
 * the handshake completes, then everything else through TLS; it gets
 * connection_lost exactly once, from the TLS layer. Output already queued
 * on `lower` (the "220 Ready to start TLS" reply) goes out before the
 * handshake. A client sends its ClientHello during this call.
 *
 * Bytes already received: the contract. Anything `lower` delivers after
 * this call goes to TLS. Bytes that were read BEFORE it, in the same read
 * as the STARTTLS command (a client that pipelined its ClientHello), are
 * still in the caller's hands: hand them to braid_tls_feed() (they are
 * treated as ciphertext) or discard them, but never parse them as
 * plaintext commands: they were not protected by TLS (the classic STARTTLS
 * command-injection bug). With braid_line_receiver, switch to raw mode in
 * the line_received that calls braid_tls_start; raw_data_received then
 * gets exactly those bytes, and connection_made(tls) is the place to go
 * back to line mode. */
int braid_tls_start(braid_transport_t *lower, braid_tls_context_t *ctx,
                    const char *server_name, braid_protocol_t *p,
                    braid_transport_t **out);

/* Give the TLS layer ciphertext that was read before braid_tls_start (see
 * above). It is processed on the next reactor turn, never inside this
 * call. BRAID_EINVAL if `tls` is not a TLS transport, BRAID_ECLOSED once
 * it is closing. */
int braid_tls_feed(braid_transport_t *tls, const void *data, size_t len);

/* ------------------------------------------------------------------------
 * Inspecting a TLS transport (any time after connection_made; the error
 * also in connection_lost). On other transports: NULL / false /
 * BRAID_EINVAL.
 * ------------------------------------------------------------------------ */

bool braid_transport_is_tls(const braid_transport_t *t);
/* The ALPN protocol agreed on, or NULL. */
const char *braid_tls_alpn(const braid_transport_t *t);
/* The SNI name: what a client sent, what a server received; or NULL. */
const char *braid_tls_server_name(const braid_transport_t *t);
/* "TLSv1.3", ... and the cipher suite name. */
const char *braid_tls_version(const braid_transport_t *t);
const char *braid_tls_cipher(const braid_transport_t *t);
/* Whether the session was resumed (abbreviated handshake). */
bool braid_tls_session_reused(const braid_transport_t *t);
/* Why the connection failed, or NULL: a sentence with OpenSSL's reason. */
const char *braid_tls_error(const braid_transport_t *t);
/* The peer certificate's subject and issuer (RFC 2253, "CN=localhost,O=x")
 * and its SHA-256 fingerprint ("AB:CD:..", 95 characters + NUL). Return the
 * length written (truncated to fit, NUL-terminated), BRAID_ENOTCONN before
 * the handshake, BRAID_ENOENT when the peer sent no certificate. */
int braid_tls_peer_subject(const braid_transport_t *t, char *buf, size_t len);
int braid_tls_peer_issuer(const braid_transport_t *t, char *buf, size_t len);
int braid_tls_peer_fingerprint(const braid_transport_t *t, char *buf,
                               size_t len);
/* The peer's X509 * (borrowed: valid until connection_lost returns), and
 * the SSL *, for everything else. */
void *braid_tls_peer_x509(const braid_transport_t *t);
void *braid_tls_native(const braid_transport_t *t);

/* The same through braid_transport_extra() (braid/transport.h), which
 * also finds them under a layer stacked on the TLS transport (a framing
 * or WebSocket layer passes names it does not know down):
 *   "tls.ssl"          SSL *                  (braid_tls_native)
 *   "tls.peer_x509"    X509 *, NULL without   (braid_tls_peer_x509)
 *   "tls.alpn"         const char *           (braid_tls_alpn)
 *   "tls.server_name"  const char *           (braid_tls_server_name)
 *   "tls.version"      const char *           (braid_tls_version)
 *   "tls.cipher"       const char *           (braid_tls_cipher)
 * Borrowed, as above; NULL where the function returns NULL. */

/* The "tls:" endpoint scheme (braid/endpoint.h), which braid serves on
 * every reactor as "tls" and "ssl". Exposed for modules that build on it
 * (a scheme that runs TLS under another name calls its listen/connect
 * with a "tls:" description). Never NULL; without TLS its calls return
 * BRAID_ENOTSUP with a message. */
const braid_endpoint_scheme *braid_tls_endpoint_scheme(void);

#ifdef __cplusplus
}
#endif
#endif
