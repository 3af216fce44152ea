/* The HTTP client over TLS against a real server nobody here wrote:
 * `openssl s_server -www` on 127.0.0.1, with a certificate the test makes
 * with the openssl CLI. Skipped (not faked) without the CLI or TLS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "braid/braid.h"

typedef struct result {
  int done, err, status;
  char body[4096];
  size_t len;
} result;

static void on_ok(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  result *r = arg;
  braid_http_client_response_t *resp = braid_result_value(res);
  r->status = resp->status;
  r->len = resp->body_len < sizeof r->body - 1 ? resp->body_len : sizeof r->body - 1;
  memcpy(r->body, resp->body, r->len);
  r->body[r->len] = '\0';
  r->done = 1;
}

static void on_err(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  result *r = arg;
  r->err = braid_failure_code(braid_result_failure(res));
  braid_result_set(res, NULL, NULL);
  r->done = 1;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  close(fd);
  return ntohs(a.sin_port);
}

static int port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static char dir[64];
static pid_t server = -1;

static int setup(void **st) {
  (void)st;
  if (system("command -v openssl >/dev/null 2>&1") != 0)
    return 0;
  snprintf(dir, sizeof dir, "/tmp/braid-https-XXXXXX");
  if (mkdtemp(dir) == NULL)
    return -1;
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "cd %s && openssl req -x509 -newkey ec -pkeyopt "
           "ec_paramgen_curve:P-256 -nodes -keyout key.pem -out cert.pem "
           "-days 2 -subj /CN=localhost "
           "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1",
           dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **st) {
  (void)st;
  if (server > 0) {
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    server = -1;
  }
  if (dir[0] != '\0') {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
      return -1;
  }
  return 0;
}

static void fetch(const char *url, const char *ca, result *r) {
  braid_reactor_t *re;
  assert_int_equal(braid_reactor_create(&re, NULL), 0);
  braid_http_client_options o = {0};
  o.tls_ca_file = ca;
  o.connect_timeout = BRAID_SEC(5);
  braid_http_client_t *c;
  assert_int_equal(braid_http_client_create(re, &o, &c), 0);
  braid_deferred_t d;
  assert_int_equal(braid_http_request(c, "GET", url, NULL, 0, NULL, 0, &d), 0);
  assert_int_equal(braid_deferred_add_callbacks(d, on_ok, r, on_err, r), 0);
  uint64_t t0 = braid_hrtime();
  while (!r->done && braid_hrtime() - t0 < BRAID_SEC(15))
    braid_reactor_run_once(re, true);
  braid_http_client_destroy(c);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_https_s_server(void **st) {
  (void)st;
  if (dir[0] == '\0')
    skip(); /* no openssl CLI */
  braid_tls_context_t *probe;
  if (braid_tls_context_create(&probe, BRAID_TLS_CLIENT) == BRAID_ENOTSUP)
    skip(); /* built without TLS */
  braid_tls_context_free(probe);
  int port = free_port();
  server = fork();
  if (server == 0) {
    char acc[32];
    snprintf(acc, sizeof acc, "127.0.0.1:%d", port);
    if (chdir(dir) != 0)
      _exit(126);
    int null = open("/dev/null", 0);
    dup2(null, 0);
    execlp("openssl", "openssl", "s_server", "-accept", acc, "-cert",
           "cert.pem", "-key", "key.pem", "-www", "-quiet", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 200 && !port_open(port); i++)
    usleep(20000);
  assert_true(port_open(port));
  char url[128], ca[128];
  snprintf(url, sizeof url, "https://localhost:%d/", port);
  snprintf(ca, sizeof ca, "%s/cert.pem", dir);

  /* Verified against the test's CA: the page comes back. */
  result ok = {0};
  fetch(url, ca, &ok);
  assert_true(ok.done);
  assert_int_equal(ok.err, 0);
  assert_int_equal(ok.status, 200);
  assert_non_null(strstr(ok.body, "s_server"));

  /* The system's CAs do not know this self-signed certificate: refused. */
  result bad = {0};
  fetch(url, NULL, &bad);
  assert_true(bad.done);
  assert_int_not_equal(bad.err, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_https_s_server, setup, teardown)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
