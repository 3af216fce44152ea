/* MIME types by file extension for static files. A short table of what
 * web sites actually serve, looked up case-insensitively; browsers sniff
 * nothing for us when X-Content-Type-Options is set, so these must be
 * right for scripts, styles, fonts and wasm in particular. */
#include <string.h>
#include <strings.h>

#include "braid/http.h"

typedef struct mime {
  const char *ext;
  const char *type;
} mime;

static const mime mime_table[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"text", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"c", "text/plain; charset=utf-8"},
    {"h", "text/plain; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"xml", "application/xml"},
    {"rss", "application/rss+xml"},
    {"atom", "application/atom+xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/vnd.microsoft.icon"},
    {"bmp", "image/bmp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tgz", "application/gzip"},
    {"tar", "application/x-tar"},
    {"xz", "application/x-xz"},
    {"bz2", "application/x-bzip2"},
    {"zst", "application/zstd"},
    {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},
    {"wav", "audio/wav"},
    {"flac", "audio/flac"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"ogv", "video/ogg"},
    {"mpeg", "video/mpeg"},
    {"webmanifest", "application/manifest+json"},
};

const char *braid_http_mime_type(const char *name) {
  const char *slash = name != NULL ? strrchr(name, '/') : NULL;
  const char *base = slash != NULL ? slash + 1 : name;
  const char *dot = base != NULL ? strrchr(base, '.') : NULL;
  if (dot == NULL || dot == base)
    return "application/octet-stream";
  for (size_t i = 0; i < sizeof mime_table / sizeof mime_table[0]; i++)
    if (strcasecmp(dot + 1, mime_table[i].ext) == 0)
      return mime_table[i].type;
  return "application/octet-stream";
}
