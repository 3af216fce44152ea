/* Static files (braid/http.h): twisted.web.static.File for braid.
 *
 * Files are opened per request and sent with braid_http_sendfile, so the
 * body never sits in user memory where the platform has sendfile(2), and
 * is read in bounded pieces as the client drains it where it does not. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "braid/braid.h"
#include "braid/http.h"

struct braid_http_static {
  char *root; /* realpath of the root, without a trailing slash */
  size_t root_len;
  braid_http_static_options opts;
};

int braid_http_static_create(const char *root,
                             const braid_http_static_options *opts,
                             braid_http_static_t **out) {
  if (root == NULL || out == NULL)
    return BRAID_EINVAL;
  *out = NULL;
  char *real = realpath(root, NULL);
  if (real == NULL)
    return errno == ENOENT ? BRAID_ENOENT : BRAID_EINVAL;
  struct stat st;
  if (stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
    free(real);
    return BRAID_EINVAL;
  }
  braid_http_static_t *s = braid_calloc(1, sizeof *s);
  if (s == NULL) {
    free(real);
    return BRAID_ENOMEM;
  }
  size_t n = strlen(real);
  while (n > 1 && real[n - 1] == '/')
    real[--n] = '\0';
  if (n == 1)
    n = 0; /* root "/": every path is under it */
  s->root = real;
  s->root_len = n;
  if (opts != NULL)
    s->opts = *opts;
  *out = s;
  return 0;
}

void braid_http_static_destroy(braid_http_static_t *s) {
  if (s == NULL)
    return;
  free(s->root);
  braid_free(s);
}

static void plain(braid_http_req_t *req, int status) {
  char body[64];
  int n =
      snprintf(body, sizeof body, "%d %s\n", status, braid_http_reason(status));
  braid_http_field_t f[2] = {{"Content-Type", "text/plain; charset=utf-8"},
                             {"Allow", "GET, HEAD"}};
  braid_http_respond(req, status, f, status == 405 ? 2 : 1, body, (size_t)n);
}

/* A growable string for listings. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = braid_realloc(b->p, cap);
    if (p == NULL) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) {
  sb_put(b, s, strlen(s));
}

/* Names are data: escape them for HTML text and attributes. */
static void sb_html(sbuf *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '&':
      sb_str(b, "&amp;");
      break;
    case '<':
      sb_str(b, "&lt;");
      break;
    case '>':
      sb_str(b, "&gt;");
      break;
    case '"':
      sb_str(b, "&quot;");
      break;
    case '\'':
      sb_str(b, "&#39;");
      break;
    default:
      sb_put(b, s, 1);
    }
  }
}

/* ...and percent-encode them in hrefs, so "a b#?.txt" links to itself. */
static void sb_url(sbuf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
        ch == '~') {
      sb_put(b, s, 1);
    } else {
      char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
      sb_put(b, e, 3);
    }
  }
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void listing(braid_http_static_t *s, braid_http_req_t *req,
                    const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    plain(req, 403);
    return;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  int oom = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *nm = e->d_name;
    if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
      continue;
    if (!s->opts.dotfiles && nm[0] == '.')
      continue; /* hidden: not published, so not listed */
    size_t l = strlen(nm);
    /* Mark directories with a trailing slash, as Twisted's listing does. */
    struct stat st;
    int isdir = fstatat(dirfd(d), nm, &st, 0) == 0 && S_ISDIR(st.st_mode);
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      char **nn = braid_realloc(names, cap * sizeof *nn);
      if (nn == NULL) {
        oom = 1;
        break;
      }
      names = nn;
    }
    char *copy = braid_malloc(l + 2);
    if (copy == NULL) {
      oom = 1;
      break;
    }
    memcpy(copy, nm, l);
    copy[l] = isdir ? '/' : '\0';
    copy[l + 1] = '\0';
    names[n++] = copy;
  }
  closedir(d);
  sbuf b = {0};
  if (!oom) {
    if (n > 1) /* names is NULL for an empty folder */
      qsort(names, n, sizeof *names, name_cmp);
    const char *path = braid_http_req_path(req);
    sb_str(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
               "<title>Index of ");
    sb_html(&b, path);
    sb_str(&b, "</title></head>\n<body><h1>Index of ");
    sb_html(&b, path);
    sb_str(&b, "</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n");
    for (size_t i = 0; i < n; i++) {
      size_t l = strlen(names[i]);
      int isdir = l > 0 && names[i][l - 1] == '/';
      if (isdir)
        names[i][l - 1] = '\0';
      sb_str(&b, "<li><a href=\"");
      sb_url(&b, names[i]);
      sb_str(&b, isdir ? "/\">" : "\">");
      sb_html(&b, names[i]);
      sb_str(&b, isdir ? "/</a></li>\n" : "</a></li>\n");
    }
    sb_str(&b, "</ul>\n</body></html>\n");
  }
  for (size_t i = 0; i < n; i++)
    braid_free(names[i]);
  braid_free(names);
  if (oom || b.oom) {
    braid_free(b.p);
    plain(req, 500);
    return;
  }
  braid_http_field_t f[1] = {{"Content-Type", "text/html; charset=utf-8"}};
  braid_http_respond(req, 200, f, 1, b.p, b.len);
  braid_free(b.p);
}

/* Refuse any ".." segment, backslashes and (unless published) hidden
 * names: any segment starting with '.', so "/.git/config" and
 * "/a/.env" alike. The path is already percent-decoded, so "%2e%2e"
 * arrives here as "..". */
static int path_check(const braid_http_static_t *s, const char *rest) {
  const char *p = rest;
  while (*p) {
    while (*p == '/')
      p++;
    const char *seg = p;
    while (*p && *p != '/')
      p++;
    size_t l = (size_t)(p - seg);
    if (l == 2 && seg[0] == '.' && seg[1] == '.')
      return 403;
    if (memchr(seg, '\\', l) != NULL)
      return 403;
    if (!s->opts.dotfiles && l > 0 && seg[0] == '.')
      return 404;
  }
  return 0;
}

/* The one containment check, for every file a request opens: resolve
 * every symlink in `path` and make sure the result is still under the
 * root. Returns the resolved path (free() it) with its stat, or NULL and
 * the status to answer with. */
static char *resolve_inside(const braid_http_static_t *s, const char *path,
                            struct stat *st, int *status) {
  char *real = realpath(path, NULL);
  if (real == NULL) {
    *status = errno == EACCES ? 403 : 404;
    return NULL;
  }
  if (strncmp(real, s->root, s->root_len) != 0 ||
      (real[s->root_len] != '\0' && real[s->root_len] != '/')) {
    free(real);
    *status = 403;
    return NULL;
  }
  if (stat(real, st) < 0) {
    free(real);
    *status = 404;
    return NULL;
  }
  return real;
}

/* Open a file resolve_inside() returned. O_NOFOLLOW: the name had no
 * symlink when it was resolved, so one there now was put there since. */
static int open_resolved(const char *real) {
  return open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

/* A byte that may stand for itself in the path of a Location (RFC 3986
 * pchar and '/'); anything else is percent-encoded. */
static int loc_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || strchr("-._~!$&'()*+,;=:@/", ch) != NULL;
}

/* The redirect to a directory's slash form: the decoded path, encoded
 * again, with runs of '/' made one, a '/' added, and the query as sent.
 * Only a path: "//host/x" would be a network-path reference (RFC 3986
 * section 4.2), which browsers follow to another host, and the scheme and
 * host of an absolute-form request are the client's word. */
static char *slash_location(braid_http_req_t *req) {
  const char *path = braid_http_req_path(req);
  braid_http_view_t query = braid_http_req_query(req);
  size_t cap = strlen(path) * 3 + query.len + 4;
  char *loc = braid_malloc(cap);
  if (loc == NULL)
    return NULL;
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  loc[o++] = '/';
  for (const char *p = path; *p != '\0'; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch == '/') {
      if (loc[o - 1] != '/')
        loc[o++] = '/';
    } else if (ch != 0 && loc_char(ch)) {
      loc[o++] = (char)ch;
    } else {
      loc[o++] = '%';
      loc[o++] = hex[ch >> 4];
      loc[o++] = hex[ch & 15];
    }
  }
  if (loc[o - 1] != '/')
    loc[o++] = '/';
  if (query.ptr != NULL) {
    loc[o++] = '?';
    memcpy(loc + o, query.ptr, query.len);
    o += query.len;
  }
  loc[o] = '\0';
  return loc;
}

static int etag_match(braid_http_view_t v, const char *etag) {
  /* A list of entity tags; weak comparison, as RFC 9110 section 13.1.2
   * asks for If-None-Match. */
  size_t i = 0;
  size_t el = strlen(etag);
  while (i < v.len) {
    while (i < v.len &&
           (v.ptr[i] == ' ' || v.ptr[i] == '\t' || v.ptr[i] == ','))
      i++;
    size_t start = i;
    while (i < v.len && v.ptr[i] != ',')
      i++;
    size_t end = i;
    while (end > start && (v.ptr[end - 1] == ' ' || v.ptr[end - 1] == '\t'))
      end--;
    const char *t = v.ptr + start;
    size_t tl = end - start;
    if (tl == 1 && t[0] == '*')
      return 1;
    if (tl >= 2 && t[0] == 'W' && t[1] == '/') {
      t += 2;
      tl -= 2;
    }
    if (tl == el && memcmp(t, etag, el) == 0)
      return 1;
  }
  return 0;
}

/* Parse "bytes=a-b" for a file of `size` bytes. Returns 1 for a single
 * satisfiable range, 0 to ignore the header (malformed or several
 * ranges: the whole file is sent), -1 for unsatisfiable. */
static int range_parse(braid_http_view_t v, uint64_t size, uint64_t *from,
                       uint64_t *to) {
  const char *p = v.ptr, *end = v.ptr + v.len;
  if (v.len < 6 || strncmp(p, "bytes=", 6) != 0)
    return 0;
  p += 6;
  while (p < end && *p == ' ')
    p++;
  if (memchr(p, ',', (size_t)(end - p)) != NULL)
    return 0; /* several ranges: answered with 200 (documented) */
  uint64_t a = 0, b = 0;
  int has_a = 0, has_b = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    if (a > (UINT64_MAX - 9) / 10)
      return 0;
    a = a * 10 + (uint64_t)(*p++ - '0');
    has_a = 1;
  }
  if (p >= end || *p != '-')
    return 0;
  p++;
  while (p < end && *p >= '0' && *p <= '9') {
    if (b > (UINT64_MAX - 9) / 10)
      return 0;
    b = b * 10 + (uint64_t)(*p++ - '0');
    has_b = 1;
  }
  while (p < end && *p == ' ')
    p++;
  if (p != end || (!has_a && !has_b))
    return 0;
  if (!has_a) {
    /* A suffix: the last b bytes. */
    if (b == 0 || size == 0)
      return -1;
    *from = b >= size ? 0 : size - b;
    *to = size - 1;
    return 1;
  }
  if (has_b && b < a)
    return 0; /* invalid: ignored, RFC 9110 section 14.1.1 */
  if (a >= size)
    return -1;
  *from = a;
  *to = has_b && b < size ? b : size - 1;
  return 1;
}

static void file_done(braid_http_req_t *req, int status, void *arg) {
  (void)status;
  close((int)(intptr_t)arg);
  braid_http_finish(req);
}

static void serve_file(braid_http_static_t *s, braid_http_req_t *req, int fd,
                       const struct stat *st, const char *name) {
  (void)s;
  char etag[64], lm[32], crange[96], alen[32];
  uint64_t size = (uint64_t)st->st_size;
#if defined(__APPLE__)
  long long mns = (long long)st->st_mtimespec.tv_nsec;
#else
  long long mns = (long long)st->st_mtim.tv_nsec;
#endif
  snprintf(etag, sizeof etag, "\"%llx-%llx%09llx\"", (unsigned long long)size,
           (unsigned long long)st->st_mtime, (unsigned long long)mns);
  braid_http_date_format((int64_t)st->st_mtime, lm);

  /* Conditionals (RFC 9110 section 13.2.2): If-None-Match wins over
   * If-Modified-Since. */
  braid_http_view_t inm = braid_http_req_header(req, "If-None-Match");
  int not_modified = 0;
  if (inm.ptr != NULL) {
    not_modified = etag_match(inm, etag);
  } else {
    braid_http_view_t ims = braid_http_req_header(req, "If-Modified-Since");
    int64_t t;
    if (ims.ptr != NULL && braid_http_date_parse(ims.ptr, ims.len, &t) == 0 &&
        (int64_t)st->st_mtime <= t)
      not_modified = 1;
  }
  braid_http_field_t f[6] = {
      {"Content-Type", braid_http_mime_type(name)},
      {"Last-Modified", lm},
      {"ETag", etag},
      {"Accept-Ranges", "bytes"},
  };
  size_t nf = 4;
  if (not_modified) {
    close(fd);
    braid_http_respond(req, 304, f + 1, 3, NULL, 0);
    return;
  }

  uint64_t from = 0, to = size ? size - 1 : 0;
  int status = 200;
  braid_http_view_t range = braid_http_req_header(req, "Range");
  if (range.ptr != NULL) {
    /* If-Range: the range only applies while the representation is the
     * one the client has part of. */
    braid_http_view_t ir = braid_http_req_header(req, "If-Range");
    int use = 1;
    if (ir.ptr != NULL) {
      if (ir.len > 0 && (ir.ptr[0] == '"' || ir.ptr[0] == 'W'))
        use = ir.len == strlen(etag) && memcmp(ir.ptr, etag, ir.len) == 0;
      else
        use = ir.len == strlen(lm) && memcmp(ir.ptr, lm, ir.len) == 0;
    }
    int rc = use ? range_parse(range, size, &from, &to) : 0;
    if (rc < 0) {
      close(fd);
      snprintf(crange, sizeof crange, "bytes */%llu", (unsigned long long)size);
      f[4].name = "Content-Range";
      f[4].value = crange;
      f[0].value = "text/plain; charset=utf-8";
      static const char msg[] = "416 Range Not Satisfiable\n";
      braid_http_respond(req, 416, f, 5, msg, sizeof msg - 1);
      return;
    }
    if (rc > 0) {
      status = 206;
      snprintf(crange, sizeof crange, "bytes %llu-%llu/%llu",
               (unsigned long long)from, (unsigned long long)to,
               (unsigned long long)size);
      f[nf].name = "Content-Range";
      f[nf].value = crange;
      nf++;
    }
  }
  uint64_t len = size ? to - from + 1 : 0;
  (void)alen;
  int rc = braid_http_start(req, status, f, nf, len);
  if (rc < 0 || len == 0) {
    close(fd);
    braid_http_finish(req);
    return;
  }
  rc = braid_http_sendfile(req, fd, from, len, file_done, (void *)(intptr_t)fd);
  if (rc < 0) {
    close(fd);
    braid_http_finish(req);
  }
}

void braid_http_static_handler(braid_http_req_t *req, void *arg) {
  braid_http_static_t *s = arg;
  braid_http_view_t m = braid_http_req_method(req);
  if (!((m.len == 3 && memcmp(m.ptr, "GET", 3) == 0) ||
        braid_http_req_is_head(req))) {
    plain(req, 405);
    return;
  }
  const char *rest = braid_http_req_rest(req);
  int bad = path_check(s, rest);
  if (bad != 0) {
    plain(req, bad);
    return;
  }
  size_t rl = strlen(rest);
  char *full = braid_malloc(s->root_len + rl + 16);
  if (full == NULL) {
    plain(req, 500);
    return;
  }
  memcpy(full, s->root, s->root_len);
  memcpy(full + s->root_len, rest, rl + 1);
  if (rl == 0 || rest[0] != '/') {
    full[s->root_len] = '/';
    memcpy(full + s->root_len + 1, rest, rl + 1);
  }
  /* Symlinks may point anywhere: resolve and check we stayed inside. */
  struct stat st;
  int status = 0;
  char *real = resolve_inside(s, full, &st, &status);
  braid_free(full);
  if (real == NULL) {
    plain(req, status);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    const char *path = braid_http_req_path(req);
    size_t pl = strlen(path);
    if (pl == 0 || path[pl - 1] != '/') {
      /* Relative links in the page need the trailing slash. */
      char *loc = slash_location(req);
      if (loc != NULL) {
        braid_http_field_t f[2] = {{"Location", loc},
                                   {"Content-Type", "text/plain"}};
        braid_http_respond(req, 301, f, 2, "301 Moved Permanently\n", 22);
        braid_free(loc);
      } else {
        plain(req, 500);
      }
      free(real);
      return;
    }
    size_t l = strlen(real);
    char *idx = braid_malloc(l + 12);
    if (idx == NULL) {
      free(real);
      plain(req, 500);
      return;
    }
    memcpy(idx, real, l);
    memcpy(idx + l, "/index.html", 12);
    /* index.html is a file this request opens like any other: it gets
     * the same containment check (it may be a symlink to anywhere). */
    struct stat ist;
    int istatus = 0;
    char *ireal = resolve_inside(s, idx, &ist, &istatus);
    braid_free(idx);
    if (ireal != NULL && S_ISREG(ist.st_mode)) {
      int fd = open_resolved(ireal);
      if (fd < 0)
        plain(req, 403);
      else if (fstat(fd, &ist) == 0)
        serve_file(s, req, fd, &ist, ireal);
      else {
        close(fd);
        plain(req, 500);
      }
    } else if (ireal == NULL && istatus == 403) {
      /* There is an index.html, but it leads out of the root (or cannot
       * be read): refuse rather than list around it. */
      plain(req, 403);
    } else if (s->opts.no_listing) {
      plain(req, 404);
    } else {
      listing(s, req, real);
    }
    free(ireal);
    free(real);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    free(real);
    plain(req, 403);
    return;
  }
  int fd = open_resolved(real);
  if (fd < 0) {
    plain(req, errno == EACCES ? 403 : 404);
  } else {
    /* fstat the open file: what is sent is what was measured. */
    if (fstat(fd, &st) == 0)
      serve_file(s, req, fd, &st, real);
    else {
      close(fd);
      plain(req, 500);
    }
  }
  free(real);
}
