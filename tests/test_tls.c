/* TLS (braid/tls.h) over real sockets on 127.0.0.1, on the poller under
 * test: braid client <-> braid server (echo, a large transfer under flow
 * control, ALPN, SNI, close_notify, session resumption, refused
 * certificates), STARTTLS across the line receiver, a garbage handshake,
 * and interop with the openssl CLI (s_client against braid's server,
 * braid's client against s_server -www).
 *
 * Certificates are made by this test with the openssl CLI in a temporary
 * directory; without the CLI the whole file is skipped with a message. A
 * build without TLS skips the whole file too (exit 77). */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"
#include "braid/transport_impl.h"

static char dir[64];
static int have_expired;

static void pathf(char *out, size_t len, const char *name) {
  snprintf(out, len, "%s/%s", dir, name);
}

/* ------------------------------------------------------------------------
 * Certificates, made with the openssl CLI
 * ------------------------------------------------------------------------ */

static const char *certs_sh =
    "set -e\n"
    "cd \"$1\"\n"
    "ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "openssl req -x509 $ec -keyout ca.key -out ca.pem -days 30 "
    "  -subj /CN=braid-test-ca 2>/dev/null\n"
    "leaf() { # name cn san\n"
    "  openssl req $ec -keyout $1.key -out $1.csr -subj /CN=$2 2>/dev/null\n"
    "  printf 'subjectAltName=%s\\n' \"$3\" > $1.ext\n"
    "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
    "    -days 30 -extfile $1.ext -out $1.pem 2>/dev/null\n"
    "}\n"
    "leaf srv localhost DNS:localhost,IP:127.0.0.1\n"
    "leaf other other.example DNS:other.example\n"
    /* An RSA certificate, so that a static-RSA suite could be chosen if
     * the server allowed it. */
    "ec='-newkey rsa:2048 -nodes'\n"
    "leaf rsa localhost DNS:localhost,IP:127.0.0.1\n"
    "ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "openssl req -x509 $ec -keyout self.key -out self.pem -days 30 "
    "  -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null\n"
    /* An expired certificate: openssl 3.0's x509 has no -not_after, but
     * `openssl ca` takes explicit dates. */
    "mkdir -p db && : > db/index.txt && echo 01 > db/serial\n"
    "cat > ca.cnf <<EOF\n"
    "[ca]\ndefault_ca=d\n[d]\ndir=db\ndatabase=db/index.txt\n"
    "serial=db/serial\nnew_certs_dir=db\ndefault_md=sha256\n"
    "policy=p\ncopy_extensions=copy\nunique_subject=no\n[p]\n"
    "commonName=supplied\nEOF\n"
    "openssl req $ec -keyout expired.key -out expired.csr -subj /CN=localhost "
    "  -addext subjectAltName=DNS:localhost 2>/dev/null\n"
    "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key "
    "  -startdate 20200101000000Z -enddate 20200201000000Z -in expired.csr "
    "  -out expired.pem >/dev/null 2>&1 || rm -f expired.pem\n";

static int have_cmd(const char *name) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
  return system(cmd) == 0;
}

static int make_certs(void) {
  snprintf(dir, sizeof dir, "/tmp/braid-tls-XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  char script[128];
  pathf(script, sizeof script, "certs.sh");
  FILE *f = fopen(script, "w");
  if (f == NULL)
    return -1;
  fputs(certs_sh, f);
  fclose(f);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "sh %s %s", script, dir);
  if (system(cmd) != 0)
    return -1;
  char p[128];
  pathf(p, sizeof p, "expired.pem");
  have_expired = access(p, R_OK) == 0;
  return 0;
}

static void remove_certs(void) {
  if (dir[0] == '\0')
    return;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

/* ------------------------------------------------------------------------
 * A reactor whose log lines the test can read
 * ------------------------------------------------------------------------ */

typedef struct env {
  braid_reactor_t *r;
  char log[8192];
  size_t log_len;
  braid_timer_t deadline;
  int timed_out;
} env;

static void log_cb(void *arg, braid_log_level level, const char *domain,
                   const char *msg) {
  env *e = arg;
  int n = snprintf(e->log + e->log_len, sizeof e->log - e->log_len,
                   "[%s] %s: %s\n", braid_log_level_name(level), domain, msg);
  if (n > 0 && e->log_len + (size_t)n < sizeof e->log)
    e->log_len += (size_t)n;
  if (getenv("BRAID_DEBUG") != NULL)
    fprintf(stderr, "[%s] %s: %s\n", braid_log_level_name(level), domain, msg);
}

static void deadline_cb(braid_timer_t *t, void *arg) {
  (void)t;
  env *e = arg;
  e->timed_out = 1;
  braid_reactor_stop(e->r);
}

static void env_init(env *e) {
  memset(e, 0, sizeof *e);
  braid_reactor_options o = {0};
  o.log_cb = log_cb;
  o.log_arg = e;
  assert_int_equal(braid_reactor_create(&e->r, &o), 0);
}

static void env_run(env *e) {
  /* generous: valgrind runs this 50 times slower */
  braid_timer_start(e->r, &e->deadline, BRAID_SEC(90), deadline_cb, e);
  assert_int_equal(braid_reactor_run(e->r), 0);
  if (braid_timer_active(&e->deadline))
    braid_timer_cancel(&e->deadline);
  assert_false(e->timed_out);
}

static void env_done(env *e) {
  assert_int_equal(braid_reactor_destroy(e->r), 0);
}

static braid_tls_context_t *server_ctx(const char *name) {
  braid_tls_context_t *c;
  char cert[128], key[128];
  snprintf(cert, sizeof cert, "%s/%s.pem", dir, name);
  snprintf(key, sizeof key, "%s/%s.key", dir, name);
  assert_int_equal(braid_tls_context_create(&c, BRAID_TLS_SERVER), 0);
  assert_int_equal(braid_tls_context_use_certificate_file(c, cert, key), 0);
  return c;
}

static braid_tls_context_t *client_ctx(void) {
  braid_tls_context_t *c;
  char ca[128];
  pathf(ca, sizeof ca, "ca.pem");
  assert_int_equal(braid_tls_context_create(&c, BRAID_TLS_CLIENT), 0);
  assert_int_equal(braid_tls_context_load_ca(c, ca, NULL), 0);
  return c;
}

/* ------------------------------------------------------------------------
 * The echo server: flow control from its output to its input
 * ------------------------------------------------------------------------ */

typedef struct echo_server {
  braid_factory_t f;
  int built, lost, last_reason, eofs;
  char alpn[32], sni[64];
  braid_reactor_t *r;
  int stop_on_lost;
} echo_server;

typedef struct echo_conn {
  braid_protocol_t p;
  echo_server *srv;
} echo_conn;

static void echo_made(braid_protocol_t *p, braid_transport_t *t) {
  echo_conn *c = (echo_conn *)p;
  const char *a = braid_tls_alpn(t), *n = braid_tls_server_name(t);
  snprintf(c->srv->alpn, sizeof c->srv->alpn, "%s", a ? a : "");
  snprintf(c->srv->sni, sizeof c->srv->sni, "%s", n ? n : "");
}
static void echo_data(braid_protocol_t *p, const void *d, size_t n) {
  assert_int_equal(braid_transport_write(p->transport, d, n), 0);
}
static void echo_pause(braid_protocol_t *p) {
  braid_transport_pause_reading(p->transport);
}
static void echo_resume(braid_protocol_t *p) {
  braid_transport_resume_reading(p->transport);
}
static void echo_lost(braid_protocol_t *p, int reason) {
  echo_conn *c = (echo_conn *)p;
  c->srv->lost++;
  c->srv->last_reason = reason;
  if (c->srv->stop_on_lost)
    braid_reactor_stop(c->srv->r);
  free(c);
}
static const braid_protocol_ops echo_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .pause_writing = echo_pause,
    .resume_writing = echo_resume,
};
static braid_protocol_t *echo_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  (void)peer;
  echo_server *s = (echo_server *)f;
  echo_conn *c = calloc(1, sizeof *c);
  c->p.ops = &echo_ops;
  c->srv = s;
  s->built++;
  return &c->p;
}

/* A TLS echo listener on 127.0.0.1, port 0. */
static braid_listener_t *listen_echo(env *e, echo_server *srv,
                                     braid_tls_context_t *ctx,
                                     braid_factory_t **tf, braid_addr_t *addr) {
  memset(srv, 0, sizeof *srv);
  srv->f.build = echo_build;
  srv->r = e->r;
  assert_int_equal(braid_tls_wrap_factory(&srv->f, ctx, tf), 0);
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(e->r, &a, NULL, *tf, &l), 0);
  assert_int_equal(braid_listener_addr(l, addr), 0);
  return l;
}

/* ------------------------------------------------------------------------
 * The client: sends `total` bytes of a pattern (as a producer), checks the
 * echo, closes
 * ------------------------------------------------------------------------ */

typedef struct client {
  braid_protocol_t p;
  braid_reactor_t *r;
  size_t total, sent, got;
  int made, lost, reason, pauses, paused, reused, mismatch;
  char alpn[32], subject[256], issuer[256], fp[128], err[512], version[32];
  const char *request; /* for s_server: send this, collect the answer */
  char answer[65536];
  size_t alen;
} client;

static unsigned char pat(size_t i) {
  return (unsigned char)(i * 7u + (i >> 13));
}

static void client_pump(client *c) {
  unsigned char buf[65536];
  while (!c->paused && c->sent < c->total) {
    size_t n = c->total - c->sent;
    if (n > sizeof buf)
      n = sizeof buf;
    for (size_t i = 0; i < n; i++)
      buf[i] = pat(c->sent + i);
    assert_int_equal(braid_transport_write(c->p.transport, buf, n), 0);
    c->sent += n;
  }
}

static void client_made(braid_protocol_t *p, braid_transport_t *t) {
  client *c = (client *)p;
  c->made = 1;
  const char *a = braid_tls_alpn(t);
  snprintf(c->alpn, sizeof c->alpn, "%s", a ? a : "");
  snprintf(c->version, sizeof c->version, "%s",
           braid_tls_version(t) ? braid_tls_version(t) : "");
  assert_true(braid_tls_peer_subject(t, c->subject, sizeof c->subject) > 0);
  assert_true(braid_tls_peer_issuer(t, c->issuer, sizeof c->issuer) > 0);
  assert_int_equal(braid_tls_peer_fingerprint(t, c->fp, sizeof c->fp), 95);
  assert_non_null(braid_tls_peer_x509(t));
  /* The same through braid_transport_extra (braid/transport.h). */
  assert_ptr_equal(braid_transport_extra(t, "tls.peer_x509"),
                   braid_tls_peer_x509(t));
  assert_ptr_equal(braid_transport_extra(t, "tls.ssl"), braid_tls_native(t));
  assert_ptr_equal(braid_transport_extra(t, "tls.alpn"), braid_tls_alpn(t));
  assert_ptr_equal(braid_transport_extra(t, "tls.version"),
                   braid_tls_version(t));
  assert_ptr_equal(braid_transport_extra(t, "tls.cipher"), braid_tls_cipher(t));
  assert_ptr_equal(braid_transport_extra(t, "tls.server_name"),
                   braid_tls_server_name(t));
  assert_null(braid_transport_extra(t, "tls.nonsense"));
  /* Other names go to the lower transport (TCP: none). */
  assert_null(braid_transport_extra(t, "r13.name"));
  c->reused = braid_tls_session_reused(t);
  if (c->request != NULL) {
    assert_int_equal(braid_transport_write(t, c->request, strlen(c->request)),
                     0);
    return;
  }
  if (c->total == 0)
    braid_transport_close(t);
  else
    client_pump(c);
}
static void client_data(braid_protocol_t *p, const void *d, size_t n) {
  client *c = (client *)p;
  if (c->request != NULL) {
    if (c->alen + n < sizeof c->answer) {
      memcpy(c->answer + c->alen, d, n);
      c->alen += n;
    }
    return;
  }
  const unsigned char *b = d;
  for (size_t i = 0; i < n; i++)
    if (b[i] != pat(c->got + i))
      c->mismatch++;
  c->got += n;
  if (c->got == c->total)
    braid_transport_close(p->transport);
}
static void client_pause(braid_protocol_t *p) {
  client *c = (client *)p;
  c->paused = 1;
  c->pauses++;
}
static void client_resume(braid_protocol_t *p) {
  client *c = (client *)p;
  c->paused = 0;
  client_pump(c);
}
static void client_lost(braid_protocol_t *p, int reason) {
  client *c = (client *)p;
  c->lost++;
  c->reason = reason;
  const char *e = braid_tls_error(p->transport);
  snprintf(c->err, sizeof c->err, "%s", e ? e : "");
  braid_reactor_stop(c->r);
}
static const braid_protocol_ops client_ops = {
    .connection_made = client_made,
    .data_received = client_data,
    .connection_lost = client_lost,
    .pause_writing = client_pause,
    .resume_writing = client_resume,
};

static void client_init(client *c, env *e, size_t total) {
  memset(c, 0, sizeof *c);
  c->p.ops = &client_ops;
  c->r = e->r;
  c->total = total;
}

/* Run the client to its end, then give the server side a moment to see
 * its own end (its connection_lost stops the reactor). */
static void run_client_and_server(env *e, echo_server *srv) {
  env_run(e);
  if (srv->lost == 0) {
    srv->stop_on_lost = 1;
    env_run(e);
  }
}

/* ------------------------------------------------------------------------
 * braid <-> braid
 * ------------------------------------------------------------------------ */

static void t_echo_alpn_resume(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  const char *sp[] = {"echo", "other"}, *cp[] = {"nope", "echo"};
  assert_int_equal(braid_tls_context_set_alpn(sctx, sp, 2), 0);
  assert_int_equal(braid_tls_context_set_alpn(cctx, cp, 2), 0);
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
  braid_tls_context_free(sctx); /* the factory holds a reference */

  for (int round = 0; round < 2; round++) {
    client c;
    client_init(&c, &e, 5000);
    srv.lost = 0;
    srv.stop_on_lost = 0;
    assert_int_equal(
        braid_tls_connect(e.r, &addr, NULL, cctx, "localhost", &c.p), 0);
    run_client_and_server(&e, &srv);
    assert_int_equal(c.made, 1);
    assert_int_equal(c.lost, 1);
    assert_int_equal(c.reason, 0);
    assert_int_equal(c.got, 5000);
    assert_int_equal(c.mismatch, 0);
    assert_string_equal(c.alpn, "echo");
    assert_string_equal(srv.alpn, "echo");
    assert_string_equal(srv.sni, "localhost");
    assert_string_equal(c.subject, "CN=localhost");
    assert_string_equal(c.issuer, "CN=braid-test-ca");
    assert_int_equal(c.fp[2], ':');
    /* the server got our close_notify: a clean end, not a truncation */
    assert_int_equal(srv.lost, 1);
    assert_int_equal(srv.last_reason, 0);
    /* the second connection resumes the first one's session */
    assert_int_equal(c.reused, round == 1);
  }
  assert_int_equal(srv.built, 2);
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(cctx);
  env_done(&e);
}

static void t_large_flow_control(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
  client c;
  client_init(&c, &e, 8u << 20);
  assert_int_equal(braid_tls_connect(e.r, &addr, NULL, cctx, "127.0.0.1", &c.p),
                   0);
  run_client_and_server(&e, &srv);
  assert_int_equal(c.lost, 1);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.got, 8u << 20);
  assert_int_equal(c.mismatch, 0);
  /* the producer was paused by the TLS layer's backed-up output */
  assert_true(c.pauses > 0);
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  env_done(&e);
}

static braid_tls_context_t *sni_other;
static braid_tls_context_t *pick_ctx(void *arg, const char *name) {
  (void)arg;
  return name != NULL && strcmp(name, "other.example") == 0 ? sni_other : NULL;
}

static void t_sni(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  sni_other = server_ctx("other");
  assert_int_equal(braid_tls_context_set_sni_cb(sctx, pick_ctx, NULL), 0);
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
  client c;
  client_init(&c, &e, 10);
  assert_int_equal(
      braid_tls_connect(e.r, &addr, NULL, cctx, "other.example", &c.p), 0);
  run_client_and_server(&e, &srv);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.got, 10);
  assert_string_equal(c.subject, "CN=other.example");
  assert_string_equal(srv.sni, "other.example");
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  braid_tls_context_free(sni_other);
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* A refused server certificate: the client's connection_lost gets
 * BRAID_EPROTO without connection_made, and both braid_tls_error and the
 * log name the problem with OpenSSL's verification text. */
static void refused(const char *cert, const char *name, const char *expect) {
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx(cert), *cctx = client_ctx();
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
  client c;
  client_init(&c, &e, 10);
  assert_int_equal(braid_tls_connect(e.r, &addr, NULL, cctx, name, &c.p), 0);
  env_run(&e);
  assert_int_equal(c.made, 0);
  assert_int_equal(c.lost, 1);
  assert_int_equal(c.reason, BRAID_EPROTO);
  if (strcasestr(c.err, expect) == NULL || strcasestr(e.log, expect) == NULL)
    fail_msg("expected '%s' in error '%s' and log '%s'", expect, c.err, e.log);
  assert_int_equal(srv.built, 0); /* the server never built a protocol */
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  env_done(&e);
}

static void t_refuse_self_signed(void **st) {
  (void)st;
  /* X509_verify_cert_error_string(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT) */
  refused("self", "localhost", "self-signed certificate");
}

static void t_refuse_wrong_host(void **st) {
  (void)st;
  refused("srv", "wrong.example", "hostname mismatch");
}

static void t_refuse_expired(void **st) {
  (void)st;
  if (!have_expired)
    skip(); /* `openssl ca -startdate/-enddate` failed: no expired cert */
  refused("expired", "localhost", "certificate has expired");
}

static void t_client_needs_name(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *cctx = client_ctx();
  client c;
  client_init(&c, &e, 0);
  braid_addr_t a;
  braid_addr_ip(&a, "127.0.0.1", 1);
  assert_int_equal(braid_tls_connect(e.r, &a, NULL, cctx, NULL, &c.p),
                   BRAID_EINVAL);
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* A client that aborts (no close_notify): the server sees a truncation. */
typedef struct aborter {
  client c;
} aborter;
static void abort_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  braid_transport_abort(t);
}
static const braid_protocol_ops abort_ops = {
    .connection_made = abort_made,
    .connection_lost = client_lost,
};

static void t_truncation(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
  client c;
  client_init(&c, &e, 0);
  c.p.ops = &abort_ops;
  assert_int_equal(braid_tls_connect(e.r, &addr, NULL, cctx, "localhost", &c.p),
                   0);
  run_client_and_server(&e, &srv);
  assert_int_equal(c.reason, BRAID_ECONNABORTED);
  assert_int_equal(srv.lost, 1);
  assert_true(srv.last_reason == BRAID_EPROTO ||
              srv.last_reason == BRAID_ECONNRESET);
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* The same abort against a lenient server: an ordinary EOF, reason 0. */
static void t_lenient_eof(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  assert_int_equal(braid_tls_context_set_lenient_eof(sctx, true), 0);
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
  client c;
  client_init(&c, &e, 0);
  c.p.ops = &abort_ops;
  assert_int_equal(braid_tls_connect(e.r, &addr, NULL, cctx, "localhost", &c.p),
                   0);
  run_client_and_server(&e, &srv);
  assert_int_equal(srv.lost, 1);
  assert_true(srv.last_reason == 0 || srv.last_reason == BRAID_ECONNRESET);
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* A server that verifies clients: refused without a certificate, accepted
 * with one the CA signed; TLS 1.3 only on the way. */
static void t_client_certificate(void **st) {
  (void)st;
  char ca[128], cert[128], key[128];
  pathf(ca, sizeof ca, "ca.pem");
  pathf(cert, sizeof cert, "other.pem");
  pathf(key, sizeof key, "other.key");
  for (int with_cert = 0; with_cert < 2; with_cert++) {
    env e;
    env_init(&e);
    braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
    assert_int_equal(braid_tls_context_load_ca(sctx, ca, NULL), 0);
    assert_int_equal(braid_tls_context_set_verify(sctx, true), 0);
    assert_int_equal(braid_tls_context_set_min_version(sctx, BRAID_TLS_1_3), 0);
    if (with_cert)
      assert_int_equal(braid_tls_context_use_certificate_file(cctx, cert, key),
                       0);
    echo_server srv;
    braid_factory_t *tf;
    braid_addr_t addr;
    braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
    client c;
    client_init(&c, &e, 100);
    assert_int_equal(
        braid_tls_connect(e.r, &addr, NULL, cctx, "localhost", &c.p), 0);
    env_run(&e);
    assert_int_equal(c.lost, 1);
    if (with_cert) {
      assert_int_equal(c.reason, 0);
      assert_int_equal(c.got, 100);
      assert_string_equal(c.version, "TLSv1.3");
      assert_int_equal(srv.built, 1);
    } else {
      /* TLS 1.3: the client learns of the refusal after its own handshake
       * finished, from the server's alert */
      assert_int_not_equal(c.reason, 0);
      assert_int_equal(srv.built, 0);
    }
    braid_listener_close(l);
    braid_tls_factory_free(tf);
    braid_tls_context_free(sctx);
    braid_tls_context_free(cctx);
    env_done(&e);
  }
}

/* Plain bytes at a TLS server: it drops the connection, builds nothing. */
typedef struct plain {
  braid_protocol_t p;
  braid_reactor_t *r;
  int lost;
  size_t got;
} plain;
static void plain_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(braid_transport_write(t, req, sizeof req - 1), 0);
}
static void plain_data(braid_protocol_t *p, const void *d, size_t n) {
  (void)d;
  ((plain *)p)->got += n; /* maybe an alert */
}
static void plain_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  plain *c = (plain *)p;
  c->lost++;
  braid_reactor_stop(c->r);
}
static const braid_protocol_ops plain_ops = {
    .connection_made = plain_made,
    .data_received = plain_data,
    .connection_lost = plain_lost,
};

static void t_garbage_handshake(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv");
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);
  plain c = {.p.ops = &plain_ops, .r = e.r};
  assert_int_equal(braid_connect(e.r, &addr, NULL, &c.p), 0);
  env_run(&e);
  assert_int_equal(c.lost, 1);
  assert_int_equal(srv.built, 0);
  if (strstr(e.log, "tls: handshake with") == NULL)
    fail_msg("no handshake failure logged: %s", e.log);
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  env_done(&e);
}

/* ------------------------------------------------------------------------
 * STARTTLS over the line receiver
 * ------------------------------------------------------------------------ */

typedef struct stls {
  braid_line_receiver_t lr;
  braid_reactor_t *r;
  braid_tls_context_t *ctx;
  int server, pipelined, tls_up, lost, reason, made_calls;
  char got[256];
  size_t fed;
  braid_listener_t *l;
  struct stls *peer_slot; /* server: where accepted connections report */
} stls;

static stls srv_conn; /* the one accepted connection */

static void stls_made(braid_line_receiver_t *lr) {
  stls *s = (stls *)lr;
  s->made_calls++;
  braid_transport_t *t = braid_line_receiver_transport(lr);
  if (!braid_transport_is_tls(t)) {
    if (!s->server) {
      braid_line_receiver_send_line(lr, "STARTTLS", 8);
      if (s->pipelined) {
        /* Do not wait for the reply: the ClientHello follows the command
         * in the same flight, as a pipelining (or malicious) client does. */
        assert_int_equal(
            braid_tls_start(t, s->ctx, "localhost", &lr->proto, NULL), 0);
      }
    }
    return;
  }
  /* TLS is up. */
  s->tls_up = 1;
  braid_line_receiver_set_line_mode(lr);
  if (!s->server)
    braid_line_receiver_send_line(lr, "PING", 4);
}

static void stls_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  stls *s = (stls *)lr;
  braid_transport_t *t = braid_line_receiver_transport(lr);
  if (s->server && !s->tls_up && len == 8 && memcmp(line, "STARTTLS", 8) == 0) {
    if (!s->pipelined)
      braid_line_receiver_send_line(lr, "220 go ahead", 12);
    /* The rest of this read (a pipelined ClientHello) is ciphertext: raw
     * mode hands it to raw_data_received, which feeds it to TLS. */
    braid_line_receiver_set_raw_mode(lr, BRAID_RAW_UNLIMITED);
    assert_int_equal(braid_tls_start(t, s->ctx, NULL, &lr->proto, NULL), 0);
    return;
  }
  if (!s->server && !s->tls_up && len >= 3 && memcmp(line, "220", 3) == 0) {
    braid_line_receiver_set_raw_mode(lr, BRAID_RAW_UNLIMITED);
    assert_int_equal(braid_tls_start(t, s->ctx, "localhost", &lr->proto, NULL),
                     0);
    return;
  }
  if (!s->tls_up) {
    /* a plaintext line where none belongs */
    braid_transport_abort(t);
    return;
  }
  snprintf(s->got + strlen(s->got), sizeof s->got - strlen(s->got), "%.*s|",
           (int)len, line);
  if (s->server && len == 4 && memcmp(line, "PING", 4) == 0)
    braid_line_receiver_send_line(lr, "PONG", 4);
  else if (!s->server)
    braid_transport_close(t);
}

static void stls_raw(braid_line_receiver_t *lr, const void *d, size_t n) {
  stls *s = (stls *)lr;
  s->fed += n;
  assert_int_equal(braid_tls_feed(braid_line_receiver_transport(lr), d, n), 0);
}

static void stls_lost(braid_line_receiver_t *lr, int reason) {
  stls *s = (stls *)lr;
  s->lost++;
  s->reason = reason;
  if (!s->server)
    braid_reactor_stop(s->r);
}

static const braid_line_receiver_ops stls_ops = {
    .connection_made = stls_made,
    .line_received = stls_line,
    .raw_data_received = stls_raw,
    .connection_lost = stls_lost,
};

typedef struct stls_factory {
  braid_factory_t f;
  braid_tls_context_t *ctx;
  braid_reactor_t *r;
  int pipelined;
} stls_factory;

static braid_protocol_t *stls_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  (void)peer;
  stls_factory *sf = (stls_factory *)f;
  braid_line_receiver_init(&srv_conn.lr, &stls_ops, NULL);
  srv_conn.r = sf->r;
  srv_conn.ctx = sf->ctx;
  srv_conn.server = 1;
  srv_conn.pipelined = sf->pipelined;
  return &srv_conn.lr.proto;
}

static void starttls(int pipelined) {
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  memset(&srv_conn, 0, sizeof srv_conn);
  stls_factory sf = {
      .f.build = stls_build, .ctx = sctx, .r = e.r, .pipelined = pipelined};
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(e.r, &a, NULL, &sf.f, &l), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  stls c;
  braid_line_receiver_init(&c.lr, &stls_ops, NULL);
  memset((char *)&c + sizeof c.lr, 0, sizeof c - sizeof c.lr);
  c.r = e.r;
  c.ctx = cctx;
  c.pipelined = pipelined;
  assert_int_equal(braid_connect(e.r, &a, NULL, &c.lr.proto), 0);
  env_run(&e);
  assert_int_equal(c.lost, 1);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.tls_up, 1);
  assert_int_equal(c.made_calls, 2); /* plain, then TLS */
  assert_string_equal(c.got, "PONG|");
  assert_string_equal(srv_conn.got, "PING|");
  /* The ClientHello came in the STARTTLS line's read. That needs both sends
   * to reach the server before it reads, which the readiness pollers'
   * try-first writes make certain on loopback; a completion poller
   * (io_uring) may deliver them in two reads, which is the plain path
   * t_starttls already covers. */
  if (pipelined && strcmp(braid_reactor_poller(e.r), "uring") != 0)
    assert_true(srv_conn.fed > 0);
  braid_listener_close(l);
  env_done(&e); /* ends the server side if it is still up */
  assert_int_equal(srv_conn.lost, 1);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
}

static void t_starttls(void **st) {
  (void)st;
  starttls(0);
}

static void t_starttls_pipelined(void **st) {
  (void)st;
  starttls(1);
}

/* ------------------------------------------------------------------------
 * TLS over the memory transport: the layer needs nothing from sockets.
 * The test carries bytes between the two memory transports by hand. Also
 * half-close: the client shuts down writing (close_notify), the server's
 * eof_received answers and closes.
 * ------------------------------------------------------------------------ */

typedef struct mem_end {
  braid_protocol_t p;
  int server, made, lost, reason, eofs, quiet, pauses, resumes;
  int pause_in_data; /* pause reading from inside data_received */
  size_t n_at_eof;   /* bytes received when eof_received ran */
  char err[256];     /* braid_tls_error in connection_lost */
  char got[64];
  size_t n, total;
} mem_end;

static void noop_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p, (void)t;
}
static void noop_lost(braid_protocol_t *p, int reason) {
  (void)p, (void)reason;
}
static const braid_protocol_ops noop_ops = {.connection_made = noop_made,
                                            .connection_lost = noop_lost};

static void mem_made(braid_protocol_t *p, braid_transport_t *t) {
  mem_end *m = (mem_end *)p;
  m->made = 1;
  if (!m->server && !m->quiet) {
    assert_int_equal(braid_transport_write(t, "abc", 3), 0);
    assert_int_equal(braid_transport_shutdown_write(t), 0);
    assert_int_equal(braid_transport_write(t, "x", 1), BRAID_ECLOSED);
  }
}
static void mem_data(braid_protocol_t *p, const void *d, size_t n) {
  mem_end *m = (mem_end *)p;
  m->total += n;
  if (m->n + n < sizeof m->got) {
    memcpy(m->got + m->n, d, n);
    m->n += n;
  }
  if (m->pause_in_data)
    braid_transport_pause_reading(p->transport);
}
static void mem_eof(braid_protocol_t *p) {
  mem_end *m = (mem_end *)p;
  m->eofs++;
  m->n_at_eof = m->n;
  if (m->server) {
    assert_int_equal(braid_transport_write(p->transport, "bye", 3), 0);
    assert_int_equal(braid_transport_close(p->transport), 0);
  }
}
static void mem_lost(braid_protocol_t *p, int reason) {
  mem_end *m = (mem_end *)p;
  m->lost++;
  m->reason = reason;
  const char *e = braid_tls_error(p->transport);
  snprintf(m->err, sizeof m->err, "%s", e ? e : "");
}
static void mem_pause(braid_protocol_t *p) {
  ((mem_end *)p)->pauses++;
}
static void mem_resume(braid_protocol_t *p) {
  ((mem_end *)p)->resumes++;
}
static const braid_protocol_ops mem_ops = {
    .connection_made = mem_made,
    .data_received = mem_data,
    .eof_received = mem_eof,
    .connection_lost = mem_lost,
    .pause_writing = mem_pause,
    .resume_writing = mem_resume,
};

/* Move what `from` wrote into `to`; returns the bytes moved. */
static size_t carry(braid_memory_transport_t *from,
                    braid_memory_transport_t *to) {
  size_t n;
  const void *v = braid_memory_transport_value(from, &n);
  if (n == 0)
    return 0;
  char *copy = malloc(n);
  memcpy(copy, v, n);
  braid_memory_transport_clear(from);
  if (braid_memory_transport_feed(to, copy, n) != 0)
    n = 0; /* `to` is closed: the bytes go nowhere */
  free(copy);
  return n;
}

static void t_memory_transport(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  braid_protocol_t base_c = {.ops = &noop_ops}, base_s = {.ops = &noop_ops};
  braid_memory_transport_t *mc, *ms;
  assert_int_equal(braid_memory_transport_create(r, &base_c, &mc), 0);
  assert_int_equal(braid_memory_transport_create(r, &base_s, &ms), 0);
  mem_end c = {.p.ops = &mem_ops}, s = {.p.ops = &mem_ops, .server = 1};
  braid_transport_t *tc, *ts;
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(ms), sctx,
                                   NULL, &s.p, &ts),
                   0);
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(mc), cctx,
                                   "localhost", &c.p, &tc),
                   0);
  assert_true(braid_transport_is_tls(tc));
  assert_ptr_equal(c.p.transport, tc);
  /* written before the handshake: kept, sent after it, first */
  assert_int_equal(braid_transport_write(tc, "pre", 3), 0);
  assert_int_equal(braid_transport_write_queued(tc) >= 3, 1);
  for (int i = 0; i < 50; i++) {
    size_t moved = carry(mc, ms) + carry(ms, mc);
    braid_clock_advance(r, 0); /* deferred closes */
    if (moved == 0 && c.lost && s.lost)
      break;
  }
  assert_int_equal(c.made, 1);
  assert_int_equal(s.made, 1);
  assert_int_equal(s.n, 6);
  assert_memory_equal(s.got, "preabc", 6);
  assert_int_equal(s.eofs, 1);
  assert_int_equal(c.n, 3);
  assert_memory_equal(c.got, "bye", 3);
  assert_int_equal(c.eofs, 1);
  assert_int_equal(s.lost, 1);
  assert_int_equal(s.reason, 0);
  braid_memory_transport_destroy(mc);
  braid_memory_transport_destroy(ms);
  /* the client side ends with the destroy if it had not (its peer's FIN
   * is not modelled by carry) */
  assert_int_equal(c.lost, 1);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Flow control through the layer, deterministically: the client's peer
 * stops reading (a blocked memory consumer), so ciphertext queues on the
 * lower transport, the client's producer is paused past the high mark and
 * resumed once the peer drained it below the low mark. pause_reading on
 * the TLS transport pauses the lower one. */
static void t_memory_flow_control(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  braid_protocol_t base_c = {.ops = &noop_ops}, base_s = {.ops = &noop_ops};
  braid_memory_transport_t *mc, *ms;
  assert_int_equal(braid_memory_transport_create(r, &base_c, &mc), 0);
  assert_int_equal(braid_memory_transport_create(r, &base_s, &ms), 0);
  mem_end c = {.p.ops = &mem_ops, .quiet = 1},
          s = {.p.ops = &mem_ops, .server = 1};
  braid_transport_t *tc, *ts;
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(ms), sctx,
                                   NULL, &s.p, &ts),
                   0);
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(mc), cctx,
                                   "localhost", &c.p, &tc),
                   0);
  for (int i = 0; i < 10; i++)
    carry(mc, ms), carry(ms, mc);
  assert_int_equal(c.made, 1);
  assert_int_equal(s.made, 1);

  braid_memory_transport_set_consumer_blocked(mc, true);
  static char chunk[8192];
  memset(chunk, 'x', sizeof chunk);
  size_t written = 0;
  while (c.pauses == 0 && written < (1u << 20)) {
    assert_int_equal(braid_transport_write(tc, chunk, sizeof chunk), 0);
    written += sizeof chunk;
  }
  assert_int_equal(c.pauses, 1);
  /* ciphertext counts: a little more than its plaintext */
  if (!(written >= 64 * 1024 && written < 80 * 1024))
    fail_msg("paused after %zu bytes", written);
  assert_true(braid_transport_write_queued(tc) > 64 * 1024);
  /* the peer reads a little: still above the low mark, still paused */
  braid_memory_transport_drain(mc, 16 * 1024);
  assert_int_equal(c.resumes, 0);
  /* and the rest: resumed */
  braid_memory_transport_drain(mc, SIZE_MAX);
  assert_int_equal(c.resumes, 1);
  assert_true(braid_transport_write_queued(tc) <= 16 * 1024);
  braid_memory_transport_set_consumer_blocked(mc, false);
  carry(mc, ms);
  assert_int_equal(s.total, written);

  assert_int_equal(braid_transport_pause_reading(ts), 0);
  assert_true(braid_memory_transport_reading_paused(ms));
  assert_int_equal(braid_transport_resume_reading(ts), 0);
  assert_false(braid_memory_transport_reading_paused(ms));

  braid_memory_transport_destroy(mc);
  braid_memory_transport_destroy(ms);
  assert_int_equal(c.lost, 1);
  assert_int_equal(s.lost, 1);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* The lower transport's end of input arrives while records are still
 * buffered and the protocol pauses reading inside the delivery of the
 * first: the end comes after the resume and after the records, never
 * while paused (a lower transport that delivers its EOF in the same call
 * chain, driven here through the TLS layer's lower protocol). */
static void t_memory_eof_while_paused(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  assert_int_equal(braid_tls_context_set_lenient_eof(cctx, true), 0);
  braid_protocol_t base_c = {.ops = &noop_ops}, base_s = {.ops = &noop_ops};
  braid_memory_transport_t *mc, *ms;
  assert_int_equal(braid_memory_transport_create(r, &base_c, &mc), 0);
  assert_int_equal(braid_memory_transport_create(r, &base_s, &ms), 0);
  mem_end c = {.p.ops = &mem_ops, .quiet = 1},
          s = {.p.ops = &mem_ops, .server = 1};
  braid_transport_t *tc, *ts;
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(ms), sctx,
                                   NULL, &s.p, &ts),
                   0);
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(mc), cctx,
                                   "localhost", &c.p, &tc),
                   0);
  for (int i = 0; i < 10; i++)
    carry(mc, ms), carry(ms, mc);
  assert_int_equal(c.made, 1);
  /* Two records from the server, taken off the wire by hand. */
  assert_int_equal(braid_transport_write(ts, "one", 3), 0);
  assert_int_equal(braid_transport_write(ts, "two", 3), 0);
  size_t n;
  const void *v = braid_memory_transport_value(ms, &n);
  char *cipher = malloc(n);
  assert_non_null(cipher);
  memcpy(cipher, v, n);
  braid_memory_transport_clear(ms);
  braid_protocol_t *lp =
      braid_transport_impl_protocol(braid_memory_transport_transport(mc));
  assert_non_null(lp);
  c.pause_in_data = 1;
  lp->ops->data_received(lp, cipher, n);
  free(cipher);
  assert_int_equal(c.n, 3);
  lp->ops->eof_received(lp);
  assert_int_equal(c.eofs, 0); /* paused: not yet */
  c.pause_in_data = 0;
  assert_int_equal(braid_transport_resume_reading(tc), 0);
  braid_clock_advance(r, 0);
  assert_int_equal(c.n, 6);
  assert_memory_equal(c.got, "onetwo", 6);
  assert_int_equal(c.eofs, 1);
  assert_int_equal(c.n_at_eof, 6); /* after the records */
  braid_memory_transport_destroy(mc);
  braid_memory_transport_destroy(ms);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * The closing state's timeout: a peer that stops reading once we closed
 * ------------------------------------------------------------------------ */

/* Two TLS layers over memory transports, handshaken (the server side
 * through braid_tls_start, so that its protocol hears connection_lost). */
typedef struct mem_pair {
  braid_protocol_t base_c, base_s;
  braid_memory_transport_t *mc, *ms;
  mem_end c, s;
  braid_transport_t *tc, *ts;
} mem_pair;

static void mem_pair_start(mem_pair *m, braid_reactor_t *r,
                           braid_tls_context_t *sctx,
                           braid_tls_context_t *cctx) {
  memset(m, 0, sizeof *m);
  m->base_c.ops = m->base_s.ops = &noop_ops;
  m->c.p.ops = m->s.p.ops = &mem_ops;
  m->c.quiet = 1;
  m->s.server = 1;
  assert_int_equal(braid_memory_transport_create(r, &m->base_c, &m->mc), 0);
  assert_int_equal(braid_memory_transport_create(r, &m->base_s, &m->ms), 0);
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(m->ms),
                                   sctx, NULL, &m->s.p, &m->ts),
                   0);
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(m->mc),
                                   cctx, "localhost", &m->c.p, &m->tc),
                   0);
}

static void mem_pair_end(mem_pair *m) {
  braid_memory_transport_destroy(m->mc);
  braid_memory_transport_destroy(m->ms);
}

/* The server writes, closes, and its peer stops reading: the close_notify
 * and the data before it stay queued. Without progress for the close
 * timeout (default 5 s) the lower transport is aborted and the protocol
 * hears connection_lost(BRAID_ETIMEDOUT); a byte taken restarts the clock,
 * so a slow reader is not cut off. */
static void t_close_timeout_memory(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  assert_int_equal(braid_tls_context_close_timeout(sctx), BRAID_SEC(5));
  assert_int_equal(BRAID_TLS_CLOSE_TIMEOUT, BRAID_SEC(5));
  mem_pair m;
  mem_pair_start(&m, r, sctx, cctx);
  for (int i = 0; i < 10; i++)
    carry(m.mc, m.ms), carry(m.ms, m.mc);
  assert_int_equal(m.c.made, 1);
  assert_int_equal(m.s.made, 1);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(m.ms, true), 0);
  static char data[32 * 1024];
  memset(data, 'd', sizeof data);
  assert_int_equal(braid_transport_write(m.ts, data, sizeof data), 0);
  assert_int_equal(braid_transport_close(m.ts), 0);
  size_t queued = braid_transport_write_queued(braid_memory_transport_transport(m.ms));
  assert_true(queued > sizeof data); /* the data and the close_notify */
  for (int i = 0; i < 4; i++)
    braid_clock_advance(r, BRAID_SEC(1));
  assert_int_equal(m.s.lost, 0);
  assert_false(braid_memory_transport_aborted(m.ms));
  /* At 4 s the peer reads a little: 5 s more from here. */
  assert_true(braid_memory_transport_drain(m.ms, 1024) == 1024);
  for (int i = 0; i < 4; i++)
    braid_clock_advance(r, BRAID_SEC(1));
  assert_int_equal(m.s.lost, 0); /* 8 s after the close, 4 s after progress */
  assert_false(braid_memory_transport_aborted(m.ms));
  for (int i = 0; i < 3 && m.s.lost == 0; i++)
    braid_clock_advance(r, BRAID_SEC(1));
  assert_int_equal(m.s.lost, 1);
  assert_int_equal(m.s.reason, BRAID_ETIMEDOUT);
  assert_non_null(strstr(m.s.err, "close timed out"));
  assert_true(braid_memory_transport_aborted(m.ms));
  mem_pair_end(&m);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A failed handshake closes after sending what OpenSSL queued (its flight,
 * an alert): a peer that does not read holds that close for the close
 * timeout at most (1 s here, set on the context), and the failure's own
 * reason is what connection_lost gets. */
static void t_close_timeout_after_failure(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  assert_int_equal(braid_tls_context_set_close_timeout(sctx, BRAID_SEC(1)), 0);
  assert_int_equal(braid_tls_context_close_timeout(sctx), BRAID_SEC(1));
  assert_int_equal(braid_tls_context_set_close_timeout(NULL, 1), BRAID_EINVAL);
  mem_pair m;
  mem_pair_start(&m, r, sctx, cctx);
  /* The server's peer stops reading; the ClientHello arrives, the server's
   * answer queues. */
  assert_int_equal(braid_memory_transport_set_consumer_blocked(m.ms, true), 0);
  assert_true(carry(m.mc, m.ms) > 0);
  assert_true(braid_transport_write_queued(braid_memory_transport_transport(m.ms)) > 0);
  /* Then application data in the middle of the handshake: a protocol
   * error (unexpected message). */
  static const unsigned char bad[] = {0x17, 0x03, 0x03, 0x00, 0x05,
                                      'h',  'e',  'l',  'l',  'o'};
  assert_int_equal(braid_memory_transport_feed(m.ms, bad, sizeof bad), 0);
  assert_true(braid_memory_transport_closing(m.ms));
  braid_clock_advance(r, BRAID_MSEC(900));
  assert_int_equal(m.s.lost, 0);
  assert_false(braid_memory_transport_aborted(m.ms));
  braid_clock_advance(r, BRAID_MSEC(400));
  assert_int_equal(m.s.lost, 1);
  assert_int_equal(m.s.made, 0);
  assert_int_equal(m.s.reason, BRAID_EPROTO);
  assert_true(braid_memory_transport_aborted(m.ms));
  mem_pair_end(&m);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Over TCP, on every poller: the server floods a client that paused
 * reading until its producer is paused (the kernel's buffers are full and
 * ciphertext is queued), then closes. With a 200 ms close timeout the
 * server's protocol hears connection_lost(BRAID_ETIMEDOUT) soon after,
 * instead of never. */
typedef struct flood {
  braid_factory_t f;
  braid_protocol_t p;  /* the one server connection */
  braid_protocol_t cp; /* the client */
  braid_reactor_t *r;
  int paused, lost, reason, clost;
  size_t written;
  uint64_t closed_at, lost_at;
  char err[256];
} flood;

static void flood_made(braid_protocol_t *p, braid_transport_t *t) {
  flood *f = BRAID_CONTAINER_OF(p, flood, p);
  static char chunk[64 * 1024];
  memset(chunk, 'f', sizeof chunk);
  while (!f->paused && f->written < (512u << 20)) {
    assert_int_equal(braid_transport_write(t, chunk, sizeof chunk), 0);
    f->written += sizeof chunk;
  }
  assert_true(f->paused);
  braid_reactor_update_time(f->r);
  f->closed_at = braid_reactor_now(f->r);
  assert_int_equal(braid_transport_close(t), 0);
}
static void flood_pause(braid_protocol_t *p) {
  BRAID_CONTAINER_OF(p, flood, p)->paused = 1;
}
static void flood_lost(braid_protocol_t *p, int reason) {
  flood *f = BRAID_CONTAINER_OF(p, flood, p);
  f->lost++;
  f->reason = reason;
  braid_reactor_update_time(f->r);
  f->lost_at = braid_reactor_now(f->r);
  const char *e = braid_tls_error(p->transport);
  snprintf(f->err, sizeof f->err, "%s", e ? e : "");
  braid_reactor_stop(f->r);
}
static const braid_protocol_ops flood_ops = {
    .connection_made = flood_made,
    .connection_lost = flood_lost,
    .pause_writing = flood_pause,
};
static braid_protocol_t *flood_build(braid_factory_t *fa,
                                     const braid_addr_t *peer) {
  (void)peer;
  flood *f = BRAID_CONTAINER_OF(fa, flood, f);
  f->p.ops = &flood_ops;
  return &f->p;
}
static void sink_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  assert_int_equal(braid_transport_pause_reading(t), 0);
}
static void sink_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  flood *f = BRAID_CONTAINER_OF(p, flood, cp);
  f->clost++;
  braid_reactor_stop(f->r);
}
static const braid_protocol_ops sink_ops = {
    .connection_made = sink_made,
    .connection_lost = sink_lost,
};

/* Run until `*flag` is set or `secs` pass. */
static void run_until(env *e, int *flag, unsigned secs) {
  braid_timer_start(e->r, &e->deadline, BRAID_SEC(secs), deadline_cb, e);
  while (*flag == 0 && !e->timed_out)
    assert_int_equal(braid_reactor_run(e->r), 0);
  if (braid_timer_active(&e->deadline))
    braid_timer_cancel(&e->deadline);
}

static void t_close_timeout_tcp(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  assert_int_equal(braid_tls_context_set_close_timeout(sctx, BRAID_MSEC(200)),
                   0);
  flood f;
  memset(&f, 0, sizeof f);
  f.r = e.r;
  f.f.build = flood_build;
  f.cp.ops = &sink_ops;
  braid_factory_t *tf;
  assert_int_equal(braid_tls_wrap_factory(&f.f, sctx, &tf), 0);
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(e.r, &a, NULL, tf, &l), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  assert_int_equal(braid_tls_connect(e.r, &a, NULL, cctx, "localhost", &f.cp),
                   0);
  run_until(&e, &f.lost, 20);
  if (f.lost == 0)
    fail_msg("the server's close never ended (%zu bytes written)", f.written);
  /* io_uring hands the whole queue to the kernel in its sends, so the
   * lower close completes by itself there (connection_lost(0)); on the
   * readiness pollers the bytes stay queued and only the timeout ends it. */
  if (!(f.reason == 0 && strcmp(braid_reactor_poller(e.r), "uring") == 0)) {
    assert_int_equal(f.reason, BRAID_ETIMEDOUT);
    assert_non_null(strstr(f.err, "close timed out"));
  }
  uint64_t took = f.lost_at - f.closed_at;
  if ((f.reason != 0 && took < BRAID_MSEC(200)) || took > BRAID_SEC(10))
    fail_msg("lost %llu ms after the close",
             (unsigned long long)(took / 1000000u));
  /* The client sees the reset once it reads again. */
  assert_int_equal(braid_transport_resume_reading(f.cp.transport), 0);
  e.timed_out = 0;
  run_until(&e, &f.clost, 20);
  assert_int_equal(f.clost, 1);
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* ------------------------------------------------------------------------
 * Interop with the openssl CLI
 * ------------------------------------------------------------------------ */

typedef struct shell_job {
  braid_reactor_t *r;
  char cmd[1024];
  int status;
} shell_job;

static void stop_cb(braid_reactor_t *r, void *arg) {
  (void)arg;
  braid_reactor_stop(r);
}

static void *shell_thread(void *arg) {
  shell_job *j = arg;
  j->status = system(j->cmd);
  braid_call_from_thread(j->r, stop_cb, NULL);
  return NULL;
}

static int slurp(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
  return (int)n;
}

static char *load(const char *name, size_t *len) {
  char p[128];
  pathf(p, sizeof p, name);
  static char bufs[4][8192];
  static int next;
  char *b = bufs[next++ % 4];
  int n = slurp(p, b, sizeof bufs[0]);
  assert_true(n > 0);
  *len = (size_t)n;
  return b;
}

/* Certificates and CAs from memory; the client found through a "tls:"
 * endpoint with a host name (resolved off the loop, then verified). */
static void t_memory_certs_and_name(void **st) {
  (void)st;
  env e;
  env_init(&e);
  size_t cl, kl, al;
  const char *cert = load("srv.pem", &cl), *key = load("srv.key", &kl);
  braid_tls_context_t *sctx;
  assert_int_equal(braid_tls_context_create(&sctx, BRAID_TLS_SERVER), 0);
  assert_int_equal(
      braid_tls_context_use_certificate_mem(sctx, cert, cl, key, kl), 0);
  assert_int_equal(
      braid_tls_context_use_certificate_mem(sctx, "junk", 4, key, kl),
      BRAID_EINVAL);
  const char *ca = load("ca.pem", &al);
  braid_tls_context_t *cctx;
  assert_int_equal(braid_tls_context_create(&cctx, BRAID_TLS_CLIENT), 0);
  assert_int_equal(braid_tls_context_load_ca_mem(cctx, ca, al), 0);
  assert_int_equal(braid_tls_context_load_ca_mem(cctx, "junk", 4),
                   BRAID_EINVAL);
  echo_server srv;
  braid_factory_t *tf;
  braid_addr_t addr;
  braid_listener_t *l = listen_echo(&e, &srv, sctx, &tf, &addr);

  client c;
  client_init(&c, &e, 1000);
  assert_int_equal(braid_tls_connect(e.r, &addr, NULL, cctx, "localhost", &c.p),
                   0);
  run_client_and_server(&e, &srv);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.got, 1000);

  client d;
  client_init(&d, &e, 1000);
  char desc[256], err[256];
  snprintf(desc, sizeof desc, "tls:host=localhost:port=%u:caFile=%s/ca.pem",
           braid_addr_port(&addr), dir);
  srv.lost = 0;
  srv.stop_on_lost = 0;
  if (braid_endpoint_connect(e.r, desc, &d.p, err, sizeof err) != 0)
    fail_msg("%s", err);
  run_client_and_server(&e, &srv);
  if (d.reason != 0)
    fail_msg("reason %d: %s", d.reason, d.err);
  assert_int_equal(d.got, 1000);
  assert_string_equal(srv.sni, "localhost");

  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* `openssl s_client` against braid's TLS echo server, listening through a
 * "tls:" endpoint string. */
static void t_openssl_s_client(void **st) {
  (void)st;
  env e;
  env_init(&e);
  echo_server srv;
  memset(&srv, 0, sizeof srv);
  srv.f.build = echo_build;
  srv.r = e.r;
  char desc[512], err[256];
  snprintf(desc, sizeof desc,
           "tls:port=0:interface=127.0.0.1:certificate=%s/srv.pem:"
           "privateKey=%s/srv.key:alpn=echo,other",
           dir, dir);
  braid_listener_t *l;
  if (braid_endpoint_listen(e.r, desc, &srv.f, &l, err, sizeof err) != 0)
    fail_msg("%s", err);
  braid_addr_t a;
  assert_int_equal(braid_listener_addr(l, &a), 0);
  static shell_job j;
  j.r = e.r;
  char out[128];
  pathf(out, sizeof out, "s_client.out");
  /* stdin stays open until the echo is in the output (s_client writes
   * received data unbuffered), so the test does not depend on timing
   * (valgrind is slow); its EOF then makes s_client send close_notify. */
  snprintf(j.cmd, sizeof j.cmd,
           "(printf 'hello braid\\n'; i=0; while [ $i -lt 300 ] && "
           "! grep -q 'hello braid' %s 2>/dev/null; do sleep 0.1; "
           "i=$((i+1)); done) | timeout 60 openssl s_client "
           "-connect 127.0.0.1:%u -servername localhost -CAfile %s/ca.pem "
           "-verify_return_error -alpn echo > %s 2>&1",
           out, braid_addr_port(&a), dir, out);
  unlink(out); /* no stale echo from an earlier run */
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, shell_thread, &j), 0);
  braid_reactor_hold(e.r);
  env_run(&e);
  braid_reactor_release(e.r);
  pthread_join(th, NULL);
  static char text[65536];
  assert_true(slurp(out, text, sizeof text) > 0);
  if (strstr(text, "ALPN protocol: echo") == NULL ||
      strstr(text, "hello braid") == NULL ||
      strstr(text, "Verify return code: 0 (ok)") == NULL)
    fail_msg("s_client said:\n%s", text);
  /* s_client sent close_notify: a clean end on braid's side */
  if (srv.lost == 0) {
    srv.stop_on_lost = 1;
    env_run(&e);
  }
  assert_int_equal(srv.lost, 1);
  assert_int_equal(srv.last_reason, 0);
  assert_string_equal(srv.alpn, "echo");
  braid_listener_close(l);
  env_done(&e);
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

static int port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

/* braid's client (through a "tls:" endpoint string) against
 * `openssl s_server -www`: GET / and read the page. */
static void t_openssl_s_server(void **st) {
  (void)st;
  int port = free_port();
  assert_true(port > 0);
  char portarg[64], cert[128], key[128], out[128];
  snprintf(portarg, sizeof portarg, "127.0.0.1:%d", port);
  pathf(cert, sizeof cert, "srv.pem");
  pathf(key, sizeof key, "srv.key");
  pathf(out, sizeof out, "s_server.out");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    FILE *o = freopen(out, "w", stdout);
    (void)o;
    dup2(1, 2);
    execlp("openssl", "openssl", "s_server", "-accept", portarg, "-cert", cert,
           "-key", key, "-www", (char *)NULL);
    _exit(127);
  }
  int up = 0;
  for (int i = 0; i < 500 && !up; i++) {
    up = port_open(port);
    if (!up)
      usleep(10000);
  }
  env e;
  env_init(&e);
  client c;
  client_init(&c, &e, 0);
  c.request = "GET / HTTP/1.0\r\n\r\n";
  char desc[256], err[256];
  snprintf(desc, sizeof desc, "ssl:host=127.0.0.1:port=%d:caFile=%s/ca.pem",
           port, dir);
  int rc = up ? braid_endpoint_connect(e.r, desc, &c.p, err, sizeof err) : -1;
  if (rc == 0)
    env_run(&e);
  kill(pid, SIGTERM); /* our own child, by its PID */
  int status;
  waitpid(pid, &status, 0);
  if (!up)
    fail_msg("s_server did not come up on port %d", port);
  if (rc != 0)
    fail_msg("%s", err);
  assert_int_equal(c.made, 1);
  assert_int_equal(c.lost, 1);
  if (strstr(c.answer, "HTTP/1.0 200 ok") == NULL ||
      strstr(c.answer, "s_server") == NULL)
    fail_msg("unexpected page (reason %d, %s):\n%s", c.reason, c.err, c.answer);
  /* s_server -www ends with close_notify: a clean close, no truncation */
  assert_int_equal(c.reason, 0);
  env_done(&e);
}

/* ------------------------------------------------------------------------
 * Handshake timeouts (braid_tls_context_set_handshake_timeout)
 * ------------------------------------------------------------------------ */

/* A real ClientHello, as braid's client writes it: a client TLS layer
 * started over a memory transport sends it during braid_tls_start. */
static size_t client_hello(braid_reactor_t *r, unsigned char *out, size_t cap) {
  braid_tls_context_t *cctx = client_ctx();
  braid_protocol_t base = {.ops = &noop_ops}, up = {.ops = &noop_ops};
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(r, &base, &mt), 0);
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(mt), cctx,
                                   "localhost", &up, NULL),
                   0);
  size_t n;
  const unsigned char *v = braid_memory_transport_value(mt, &n);
  assert_true(n > 100 && n <= cap);
  assert_int_equal(v[0], 22); /* a handshake record */
  memcpy(out, v, n);
  braid_memory_transport_destroy(mt);
  braid_tls_context_free(cctx);
  return n;
}

static int raw_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons(port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

/* Whether the peer still holds the connection: what it sent (a server's
 * first flight) is read and dropped; an EOF or a reset means closed. */
static int raw_open(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0)
      continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

/* Watches raw sockets from the loop, every 5 ms, and notes when each was
 * closed by the server; stops the loop when all were, or after `limit`. */
typedef struct watch {
  braid_reactor_t *r;
  braid_timer_t t;
  int fd[4], n, open;
  uint64_t start, limit, closed_at[4];
} watch;

static void watch_cb(braid_timer_t *t, void *arg) {
  (void)t;
  watch *w = arg;
  uint64_t now = braid_reactor_now(w->r);
  for (int i = 0; i < w->n; i++)
    if (w->closed_at[i] == 0 && !raw_open(w->fd[i])) {
      w->closed_at[i] = now - w->start;
      w->open--;
    }
  if (w->open == 0 || now - w->start > w->limit)
    braid_reactor_stop(w->r);
  else
    braid_timer_start(w->r, &w->t, BRAID_MSEC(5), watch_cb, w);
}

static int count(const char *hay, const char *needle) {
  int k = 0;
  for (const char *p = strstr(hay, needle); p != NULL;
       p = strstr(p + 1, needle))
    k++;
  return k;
}

/* A peer that sends nothing, one that sends half a ClientHello, one that
 * sends a whole one: each stalls, and each is dropped once the handshake
 * timeout has passed (not before), without the protocol ever being built.
 * Through the context setter (with braid_tls_factory_handshakes counting
 * them) and through a "tls:" endpoint's handshake_timeout=. */
static void stalled_peers(int via_endpoint) {
  env e;
  env_init(&e);
  const uint64_t timeout = BRAID_MSEC(300);
  unsigned char hello[4096];
  size_t hn = client_hello(e.r, hello, sizeof hello);
  echo_server srv;
  braid_factory_t *tf = NULL;
  braid_listener_t *l;
  braid_addr_t addr;
  braid_tls_context_t *sctx = NULL;
  if (via_endpoint) {
    memset(&srv, 0, sizeof srv);
    srv.f.build = echo_build;
    srv.r = e.r;
    char desc[512], err[256];
    snprintf(desc, sizeof desc,
             "tls:port=0:interface=127.0.0.1:certificate=%s/srv.pem:"
             "privateKey=%s/srv.key:handshake_timeout=0.3",
             dir, dir);
    if (braid_endpoint_listen(e.r, desc, &srv.f, &l, err, sizeof err) != 0)
      fail_msg("%s", err);
    assert_int_equal(braid_listener_addr(l, &addr), 0);
  } else {
    sctx = server_ctx("srv");
    assert_int_equal(braid_tls_context_handshake_timeout(sctx),
                     BRAID_TLS_HANDSHAKE_TIMEOUT);
    assert_int_equal(braid_tls_context_set_handshake_timeout(sctx, timeout), 0);
    assert_int_equal(braid_tls_context_handshake_timeout(sctx), timeout);
    l = listen_echo(&e, &srv, sctx, &tf, &addr);
  }
  watch w = {.r = e.r, .n = 3, .open = 3, .limit = BRAID_SEC(30)};
  w.start = braid_reactor_now(e.r);
  for (int i = 0; i < 3; i++)
    w.fd[i] = raw_connect(braid_addr_port(&addr));
  assert_int_equal(send(w.fd[1], hello, hn / 2, 0), (ssize_t)(hn / 2));
  assert_int_equal(send(w.fd[2], hello, hn, 0), (ssize_t)hn);
  if (!via_endpoint) {
    /* Run until the server has accepted all three: three handshakes in
     * progress, owned by the factory. */
    for (int i = 0; i < 2000 && braid_tls_factory_handshakes(tf) < 3; i++)
      braid_reactor_run_once(e.r, BRAID_MSEC(1));
    assert_int_equal(braid_tls_factory_handshakes(tf), 3);
  }
  braid_timer_start(e.r, &w.t, 0, watch_cb, &w);
  env_run(&e);
  for (int i = 0; i < 3; i++) {
    if (w.closed_at[i] == 0)
      fail_msg("stalled peer %d still connected after %llu ms", i,
               (unsigned long long)(w.limit / 1000000u));
    /* never before the timeout */
    if (w.closed_at[i] < timeout)
      fail_msg("peer %d dropped after %llu ms, before the timeout", i,
               (unsigned long long)(w.closed_at[i] / 1000000u));
    close(w.fd[i]);
  }
  assert_int_equal(srv.built, 0);
  if (count(e.log, "handshake timed out after 300 ms") != 3)
    fail_msg("expected three timeouts in the log:\n%s", e.log);
  if (!via_endpoint)
    assert_int_equal(braid_tls_factory_handshakes(tf), 0);
  braid_listener_close(l);
  braid_tls_factory_free(tf);
  braid_tls_context_free(sctx);
  env_done(&e);
}

static void t_handshake_timeout_server(void **st) {
  (void)st;
  stalled_peers(0);
}

static void t_handshake_timeout_server_endpoint(void **st) {
  (void)st;
  stalled_peers(1);
}

/* A raw listening socket that is never accepted: the kernel completes the
 * TCP handshake and takes the ClientHello, and nothing ever answers. The
 * client gives up at its handshake timeout with BRAID_ETIMEDOUT, without
 * connection_made: through braid_tls_connect and a "tls:" endpoint. */
static void t_handshake_timeout_client(void **st) {
  (void)st;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t slen = sizeof sa;
  assert_true(lfd >= 0);
  assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(lfd, 8), 0);
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &slen), 0);
  uint16_t port = ntohs(sa.sin_port);
  for (int via_endpoint = 0; via_endpoint < 2; via_endpoint++) {
    env e;
    env_init(&e);
    client c;
    client_init(&c, &e, 10);
    uint64_t start = braid_reactor_now(e.r);
    braid_tls_context_t *cctx = NULL;
    if (via_endpoint) {
      char desc[256], err[256];
      snprintf(desc, sizeof desc,
               "tls:host=127.0.0.1:port=%u:caFile=%s/ca.pem:"
               "handshake_timeout=0.25",
               port, dir);
      if (braid_endpoint_connect(e.r, desc, &c.p, err, sizeof err) != 0)
        fail_msg("%s", err);
    } else {
      cctx = client_ctx();
      assert_int_equal(
          braid_tls_context_set_handshake_timeout(cctx, BRAID_MSEC(250)), 0);
      braid_addr_t a;
      assert_int_equal(braid_addr_ip(&a, "127.0.0.1", port), 0);
      assert_int_equal(
          braid_tls_connect(e.r, &a, NULL, cctx, "localhost", &c.p), 0);
    }
    env_run(&e);
    uint64_t took = braid_reactor_now(e.r) - start;
    assert_int_equal(c.made, 0);
    assert_int_equal(c.lost, 1);
    assert_int_equal(c.reason, BRAID_ETIMEDOUT);
    if (strstr(c.err, "handshake timed out after 250 ms") == NULL)
      fail_msg("error: '%s'", c.err);
    assert_true(took >= BRAID_MSEC(250));
    braid_tls_context_free(cctx);
    env_done(&e);
  }
  close(lfd);
}

/* The timeout is the TLS layer's, so it holds over any transport: STARTTLS
 * over the memory transport, on the manual clock, to the nanosecond. */
static void t_handshake_timeout_starttls(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_tls_context_t *cctx = client_ctx();
  assert_int_equal(braid_tls_context_set_handshake_timeout(cctx, BRAID_SEC(2)),
                   0);
  braid_protocol_t base = {.ops = &noop_ops};
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(r, &base, &mt), 0);
  mem_end c = {.p.ops = &mem_ops, .quiet = 1};
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(mt), cctx,
                                   "localhost", &c.p, NULL),
                   0);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(2) - 1), 0);
  assert_int_equal(c.lost, 0);
  assert_false(braid_memory_transport_aborted(mt));
  assert_int_equal(braid_clock_advance(r, 1), 0);
  /* the deferred connection_lost: a zero-delay timer started by a timer
   * callback lands 1 ns later */
  assert_int_equal(braid_clock_advance(r, 1), 0);
  assert_true(braid_memory_transport_aborted(mt));
  assert_int_equal(c.made, 0);
  assert_int_equal(c.lost, 1);
  assert_int_equal(c.reason, BRAID_ETIMEDOUT);
  /* 0 turns it off: nothing happens in an hour */
  mem_end d = {.p.ops = &mem_ops, .quiet = 1};
  braid_memory_transport_t *mt2;
  assert_int_equal(braid_tls_context_set_handshake_timeout(cctx, 0), 0);
  assert_int_equal(braid_memory_transport_create(r, &base, &mt2), 0);
  assert_int_equal(braid_tls_start(braid_memory_transport_transport(mt2), cctx,
                                   "localhost", &d.p, NULL),
                   0);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(3600)), 0);
  assert_int_equal(d.lost, 0);
  braid_memory_transport_destroy(mt2);
  assert_int_equal(d.lost, 1);
  braid_memory_transport_destroy(mt);
  braid_tls_context_free(cctx);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Whoever destroys a server owns its handshakes in flight
 * ------------------------------------------------------------------------ */

/* A factory on the heap, freed while a handshake it would build for is in
 * progress: under AddressSanitizer any later use is a heap-use-after-free. */
static int late_builds;
static braid_protocol_t *late_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  (void)f, (void)peer;
  late_builds++;
  return NULL;
}

typedef struct mid {
  client c;
  braid_listener_t *l;
  braid_factory_t *tf, *inner;
  braid_http_server_t *http;
  size_t in_flight;
} mid;

/* The client's handshake is complete (TLS 1.3: it sent its Finished), the
 * server's is not (it has not read that Finished yet): destroy the server
 * now, then ask for something. */
static void mid_made(braid_protocol_t *p, braid_transport_t *t) {
  mid *m = (mid *)p;
  m->c.made = 1;
  if (m->http != NULL) {
    braid_http_server_destroy(m->http);
  } else {
    braid_listener_close(m->l);
    m->in_flight = braid_tls_factory_handshakes(m->tf);
    braid_tls_factory_free(m->tf);
    free(m->inner);
  }
  const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  assert_int_equal(braid_transport_write(t, req, sizeof req - 1), 0);
}
static const braid_protocol_ops mid_ops = {
    .connection_made = mid_made,
    .data_received = client_data,
    .connection_lost = client_lost,
};

static void t_factory_free_mid_handshake(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *sctx = server_ctx("srv"), *cctx = client_ctx();
  assert_int_equal(braid_tls_context_set_min_version(sctx, BRAID_TLS_1_3), 0);
  mid m;
  memset(&m, 0, sizeof m);
  client_init(&m.c, &e, 0);
  m.c.p.ops = &mid_ops;
  m.c.request = ""; /* collect what comes back */
  m.inner = calloc(1, sizeof *m.inner);
  m.inner->build = late_build;
  late_builds = 0;
  assert_int_equal(braid_tls_wrap_factory(m.inner, sctx, &m.tf), 0);
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  assert_int_equal(braid_listen(e.r, &a, NULL, m.tf, &m.l), 0);
  assert_int_equal(braid_listener_addr(m.l, &a), 0);
  assert_int_equal(braid_tls_connect(e.r, &a, NULL, cctx, "localhost", &m.c.p),
                   0);
  env_run(&e); /* the loop runs on after the free, until the client's end */
  assert_int_equal(m.c.made, 1);
  assert_int_equal(m.in_flight, 1);
  assert_int_equal(late_builds, 0);
  assert_int_equal(m.c.lost, 1);
  assert_int_not_equal(m.c.reason, 0); /* reset, not a clean close */
  assert_int_equal(m.c.alen, 0);
  braid_tls_context_free(sctx);
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* The same through braid_http_server_destroy with a "tls:" listener (what
 * `braid web --tls-cert` runs): the server is freed at once, the handshake
 * in flight is aborted with it and never reaches the freed server. */
static void t_http_server_destroy_mid_handshake(void **st) {
  (void)st;
  env e;
  env_init(&e);
  braid_tls_context_t *cctx = client_ctx();
  mid m;
  memset(&m, 0, sizeof m);
  client_init(&m.c, &e, 0);
  m.c.p.ops = &mid_ops;
  m.c.request = "";
  assert_int_equal(braid_http_server_create(e.r, NULL, &m.http), 0);
  char desc[512], err[256];
  snprintf(desc, sizeof desc,
           "tls:port=0:interface=127.0.0.1:certificate=%s/srv.pem:"
           "privateKey=%s/srv.key",
           dir, dir);
  if (braid_http_server_listen(m.http, desc, err, sizeof err) != 0)
    fail_msg("%s", err);
  braid_addr_t a;
  assert_int_equal(braid_http_server_addr(m.http, &a), 0);
  assert_int_equal(braid_tls_connect(e.r, &a, NULL, cctx, "localhost", &m.c.p),
                   0);
  env_run(&e);
  assert_int_equal(m.c.made, 1);
  assert_int_equal(m.c.lost, 1);
  assert_int_not_equal(m.c.reason, 0);
  assert_int_equal(m.c.alen, 0); /* no response from a destroyed server */
  braid_tls_context_free(cctx);
  env_done(&e);
}

/* The reactor destroyed with handshakes in flight on a "tls:" listener
 * nobody closed: everything is aborted and freed (the leak checkers of the
 * asan and valgrind runs see to "freed"). */
static void t_reactor_destroy_mid_handshake(void **st) {
  (void)st;
  env e;
  env_init(&e);
  echo_server srv;
  memset(&srv, 0, sizeof srv);
  srv.f.build = echo_build;
  char desc[512], err[256];
  snprintf(desc, sizeof desc,
           "tls:port=0:interface=127.0.0.1:certificate=%s/srv.pem:"
           "privateKey=%s/srv.key",
           dir, dir);
  braid_listener_t *l;
  if (braid_endpoint_listen(e.r, desc, &srv.f, &l, err, sizeof err) != 0)
    fail_msg("%s", err);
  braid_addr_t a;
  assert_int_equal(braid_listener_addr(l, &a), 0);
  unsigned char hello[4096];
  size_t hn = client_hello(e.r, hello, sizeof hello);
  int fd = raw_connect(braid_addr_port(&a));
  assert_int_equal(send(fd, hello, hn, 0), (ssize_t)hn);
  /* until the server answered the hello: its handshake is in flight */
  char buf[1];
  for (int i = 0; i < 5000 && recv(fd, buf, 1, MSG_DONTWAIT | MSG_PEEK) <= 0;
       i++)
    braid_reactor_run_once(e.r, BRAID_MSEC(1));
  assert_int_equal(recv(fd, buf, 1, MSG_DONTWAIT | MSG_PEEK), 1);
  env_done(&e);
  assert_int_equal(srv.built, 0);
  close(fd);
}

/* ------------------------------------------------------------------------
 * Cipher suites: modern by default, settable
 * ------------------------------------------------------------------------ */

/* Runs `script` (sh, with $P the port and $D the test directory) in a
 * thread while the loop serves; returns its exit status. */
static int serve_while(env *e, const char *script, uint16_t port) {
  static shell_job j;
  j.r = e->r;
  char path[128];
  pathf(path, sizeof path, "clients.sh");
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "P=%u D=%s\n%s", port, dir, script);
  fclose(f);
  snprintf(j.cmd, sizeof j.cmd, "sh %s", path);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, shell_thread, &j), 0);
  braid_reactor_hold(e->r);
  env_run(e);
  braid_reactor_release(e->r);
  pthread_join(th, NULL);
  return j.status;
}

/* One `openssl s_client` per line of results: "NAME RC", then for a
 * handshake that succeeded the cipher and the key exchange (X25519, ECDH). */
static const char *sc_sh =
    "try() { n=$1; shift; timeout 30 openssl s_client -connect 127.0.0.1:$P "
    "-servername localhost \"$@\" </dev/null >$D/$n.out 2>&1; rc=$?; "
    "c=; [ $rc = 0 ] && c=$(sed -n 's/.*Cipher is \\(.*\\)/\\1/p' $D/$n.out "
    "| head -1); "
    "k=$(sed -n 's/^Server Temp Key: \\([^,]*\\).*/\\1/p' $D/$n.out | head "
    "-1); "
    "echo \"$n $rc${c:+ $c}${k:+ $k}\" >> $D/results; }\n"
    "rm -f $D/results\n";

/* The line for `name` in the results, without the name. */
static const char *result(const char *name, char *buf, size_t len) {
  char p[128], line[256];
  pathf(p, sizeof p, "results");
  FILE *f = fopen(p, "r");
  assert_non_null(f);
  buf[0] = '\0';
  size_t nl = strlen(name);
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, name, nl) == 0 && line[nl] == ' ') {
      line[strcspn(line, "\n")] = '\0';
      snprintf(buf, len, "%s", line + nl + 1);
    }
  fclose(f);
  return buf;
}

static braid_listener_t *listen_desc(env *e, echo_server *srv, const char *cert,
                                     const char *opts, uint16_t *port) {
  memset(srv, 0, sizeof *srv);
  srv->f.build = echo_build;
  srv->r = e->r;
  char desc[512], err[256];
  snprintf(desc, sizeof desc,
           "tls:port=0:interface=127.0.0.1:certificate=%s/%s.pem:"
           "privateKey=%s/%s.key%s",
           dir, cert, dir, cert, opts);
  braid_listener_t *l;
  if (braid_endpoint_listen(e->r, desc, &srv->f, &l, err, sizeof err) != 0)
    fail_msg("%s", err);
  braid_addr_t a;
  assert_int_equal(braid_listener_addr(l, &a), 0);
  *port = braid_addr_port(&a);
  return l;
}

#define EXPECT(name, want)                                                     \
  do {                                                                         \
    char b_[256];                                                              \
    if (strcmp(result(name, b_, sizeof b_), want) != 0)                        \
      fail_msg("%s: got '%s', expected '%s'", name, b_, want);                 \
  } while (0)

/* `openssl s_client` offering one kind of suite at a time, against the
 * defaults (an RSA certificate, so static RSA would be possible): static
 * RSA and CBC suites are refused (TLS 1.2), ECDHE with AES-GCM or ChaCha20
 * works, the server's order wins except for a client putting ChaCha20
 * first, and TLS 1.3 works. */
static void t_default_suites(void **st) {
  (void)st;
  env e;
  env_init(&e);
  echo_server srv;
  uint16_t port;
  braid_listener_t *l = listen_desc(&e, &srv, "rsa", "", &port);
  char script[4096];
  snprintf(script, sizeof script,
           "%s"
           "try static_gcm -tls1_2 -cipher AES128-GCM-SHA256\n"
           "try static_cbc -tls1_2 -cipher AES128-SHA\n"
           "try ecdhe_cbc -tls1_2 -cipher ECDHE-RSA-AES128-SHA\n"
           "try ecdhe_cbc256 -tls1_2 -cipher ECDHE-RSA-AES256-SHA384\n"
           "try ecdhe_gcm -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256\n"
           "try order -tls1_2 -cipher "
           "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256\n"
           "try chacha -tls1_2 -cipher "
           "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256\n"
           "try tls13 -tls1_3\n",
           sc_sh);
  assert_int_equal(serve_while(&e, script, port), 0);
  EXPECT("static_gcm", "1");
  EXPECT("static_cbc", "1");
  EXPECT("ecdhe_cbc", "1");
  EXPECT("ecdhe_cbc256", "1");
  EXPECT("ecdhe_gcm", "0 ECDHE-RSA-AES128-GCM-SHA256 X25519");
  EXPECT("order", "0 ECDHE-RSA-AES128-GCM-SHA256 X25519");
  EXPECT("chacha", "0 ECDHE-RSA-CHACHA20-POLY1305 X25519");
  /* (the group is OpenSSL's default choice, which newer releases change) */
  char b13[256];
  if (strncmp(result("tls13", b13, sizeof b13), "0 TLS_AES_128_GCM_SHA256 ",
              25) != 0)
    fail_msg("tls13: got '%s'", b13);
  braid_listener_close(l);
  env_done(&e);
}

/* The settings, through the endpoint options (which call the context
 * setters): a CBC suite allowed again for an old client, one TLS 1.3
 * suite, one group; and bad lists refused with OpenSSL's reason logged. */
static void t_suite_options(void **st) {
  (void)st;
  env e;
  env_init(&e);
  echo_server srv;
  uint16_t port;
  braid_listener_t *l = listen_desc(
      &e, &srv, "srv",
      ":ciphers=ECDHE-ECDSA-AES128-GCM-SHA256,ECDHE-ECDSA-AES128-SHA"
      ":ciphersuites=TLS_CHACHA20_POLY1305_SHA256:groups=P-384",
      &port);
  char script[4096];
  snprintf(script, sizeof script,
           "%s"
           "try cbc -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA\n"
           "try tls13 -tls1_3\n",
           sc_sh);
  assert_int_equal(serve_while(&e, script, port), 0);
  EXPECT("cbc", "0 ECDHE-ECDSA-AES128-SHA ECDH");
  EXPECT("tls13", "0 TLS_CHACHA20_POLY1305_SHA256 ECDH");
  char out[128];
  pathf(out, sizeof out, "tls13.out");
  static char text[65536];
  assert_true(slurp(out, text, sizeof text) > 0);
  if (strstr(text, "Server Temp Key: ECDH, secp384r1") == NULL &&
      strstr(text, "Server Temp Key: ECDH, P-384") == NULL)
    fail_msg("not P-384:\n%s", text);
  braid_listener_close(l);

  braid_tls_context_t *c;
  assert_int_equal(braid_tls_context_create(&c, BRAID_TLS_SERVER), 0);
  assert_int_equal(braid_tls_context_set_ciphers(c, "NO-SUCH-SUITE"),
                   BRAID_EINVAL);
  assert_int_equal(braid_tls_context_set_ciphersuites(c, "TLS_NO_SUCH"),
                   BRAID_EINVAL);
  assert_int_equal(braid_tls_context_set_groups(c, "no-such-group"),
                   BRAID_EINVAL);
  assert_int_equal(braid_tls_context_set_ciphers(c, ""), BRAID_EINVAL);
  assert_int_equal(braid_tls_context_set_groups(c, "X25519:P-256"), 0);
  braid_tls_context_free(c);
  char err[256];
  memset(&srv, 0, sizeof srv);
  srv.f.build = echo_build;
  char desc[512];
  snprintf(desc, sizeof desc,
           "tls:port=0:certificate=%s/srv.pem:privateKey=%s/srv.key:"
           "ciphers=NOPE",
           dir, dir);
  assert_int_equal(
      braid_endpoint_listen(e.r, desc, &srv.f, &l, err, sizeof err),
      BRAID_EINVAL);
  /* (the reason goes to the default log: a context has no reactor) */
  assert_non_null(strstr(err, "bad ciphers"));
  snprintf(desc, sizeof desc,
           "tls:port=0:certificate=%s/srv.pem:privateKey=%s/srv.key:"
           "handshake_timeout=soon",
           dir, dir);
  assert_int_equal(
      braid_endpoint_listen(e.r, desc, &srv.f, &l, err, sizeof err),
      BRAID_EINVAL);
  assert_non_null(strstr(err, "bad handshake_timeout 'soon'"));
  env_done(&e);
}

/* ------------------------------------------------------------------------
 * Endpoint string errors
 * ------------------------------------------------------------------------ */

static void t_endpoint_errors(void **st) {
  (void)st;
  env e;
  env_init(&e);
  echo_server srv;
  memset(&srv, 0, sizeof srv);
  srv.f.build = echo_build;
  char err[256];
  braid_listener_t *l;
  assert_int_equal(
      braid_endpoint_listen(e.r, "tls:port=0", &srv.f, &l, err, sizeof err),
      BRAID_EINVAL);
  assert_non_null(strstr(err, "missing certificate"));
  assert_int_equal(braid_endpoint_listen(e.r,
                                         "tls:port=0:certificate=/nonexistent",
                                         &srv.f, &l, err, sizeof err),
                   BRAID_EINVAL);
  assert_non_null(strstr(err, "cannot load"));
  env_done(&e);
}

int main(void) {
  if (!braid_tls_available()) {
    printf("skip: braid was built without TLS (-Dtls=disabled)\n");
    return 77;
  }
  if (!have_cmd("openssl")) {
    printf("skip: the openssl CLI is missing (it makes the test "
           "certificates)\n");
    return 77;
  }
  if (make_certs() < 0) {
    remove_certs();
    printf("skip: cannot make test certificates with the openssl CLI\n");
    return 77;
  }
  if (!have_expired)
    printf("note: no expired certificate (openssl ca failed); that case is "
           "skipped\n");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_echo_alpn_resume),
      cmocka_unit_test(t_large_flow_control),
      cmocka_unit_test(t_sni),
      cmocka_unit_test(t_refuse_self_signed),
      cmocka_unit_test(t_refuse_wrong_host),
      cmocka_unit_test(t_refuse_expired),
      cmocka_unit_test(t_client_needs_name),
      cmocka_unit_test(t_truncation),
      cmocka_unit_test(t_lenient_eof),
      cmocka_unit_test(t_client_certificate),
      cmocka_unit_test(t_garbage_handshake),
      cmocka_unit_test(t_starttls),
      cmocka_unit_test(t_starttls_pipelined),
      cmocka_unit_test(t_memory_transport),
      cmocka_unit_test(t_memory_flow_control),
      cmocka_unit_test(t_memory_eof_while_paused),
      cmocka_unit_test(t_close_timeout_memory),
      cmocka_unit_test(t_close_timeout_after_failure),
      cmocka_unit_test(t_close_timeout_tcp),
      cmocka_unit_test(t_memory_certs_and_name),
      cmocka_unit_test(t_openssl_s_client),
      cmocka_unit_test(t_openssl_s_server),
      cmocka_unit_test(t_endpoint_errors),
      cmocka_unit_test(t_handshake_timeout_server),
      cmocka_unit_test(t_handshake_timeout_server_endpoint),
      cmocka_unit_test(t_handshake_timeout_client),
      cmocka_unit_test(t_handshake_timeout_starttls),
      cmocka_unit_test(t_factory_free_mid_handshake),
      cmocka_unit_test(t_http_server_destroy_mid_handshake),
      cmocka_unit_test(t_reactor_destroy_mid_handshake),
      cmocka_unit_test(t_default_suites),
      cmocka_unit_test(t_suite_options),
  };
  if (getenv("BRAID_TEST_FILTER") != NULL) /* run one test by name */
    cmocka_set_test_filter(getenv("BRAID_TEST_FILTER"));
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  remove_certs();
  return rc;
}
