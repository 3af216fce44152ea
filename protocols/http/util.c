/* HTTP text helpers without state (braid/http.h): reason phrases, HTTP
 * dates (RFC 9110 section 5.6.7) and percent-decoding. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "protocols/http/server_internal.h"

char *braid__hs_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = braid_malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

const char *braid_http_reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 411:
    return "Length Required";
  case 412:
    return "Precondition Failed";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 416:
    return "Range Not Satisfiable";
  case 417:
    return "Expectation Failed";
  case 426:
    return "Upgrade Required";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  }
  return "";
}

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                 "Thu", "Fri", "Sat"};
const char braid__hs_months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm):
 * timegm() is not in C11 or POSIX, and mktime() would apply the local
 * zone. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

size_t braid_http_date_format(int64_t unix_time, char *buf) {
  time_t tt = (time_t)unix_time;
  struct tm tm;
  if (gmtime_r(&tt, &tm) == NULL)
    memset(&tm, 0, sizeof tm);
  int n = snprintf(buf, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                   wdays[tm.tm_wday % 7], tm.tm_mday,
                   braid__hs_months[tm.tm_mon % 12], tm.tm_year + 1900,
                   tm.tm_hour, tm.tm_min, tm.tm_sec);
  return n > 0 ? (size_t)n : 0;
}

static int month_index(const char *s) {
  for (int i = 0; i < 12; i++)
    if (strncmp(s, braid__hs_months[i], 3) == 0)
      return i;
  return -1;
}

int braid_http_date_parse(const char *s, size_t len, int64_t *out) {
  char b[64];
  if (s == NULL || out == NULL || len == 0 || len >= sizeof b)
    return BRAID_EINVAL;
  memcpy(b, s, len);
  b[len] = '\0';
  char wd[16], mon[4];
  int d, y, hh, mm, ss, n = 0;
  /* IMF-fixdate, RFC 850, asctime (RFC 9110 section 5.6.7). */
  if (sscanf(b, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", wd, &d, mon, &y, &hh, &mm,
             &ss, &n) == 7 &&
      n == (int)len) {
  } else if (sscanf(b, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d GMT%n", wd, &d,
                    mon, &y, &hh, &mm, &ss, &n) == 7 &&
             n == (int)len) {
    y += y < 70 ? 2000 : 1900;
  } else if (sscanf(b, "%3s %3s %2d %2d:%2d:%2d %4d%n", wd, mon, &d, &hh, &mm,
                    &ss, &y, &n) == 7 &&
             n == (int)len) {
  } else {
    return BRAID_EINVAL;
  }
  int m = month_index(mon);
  if (m < 0 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 || hh < 0 ||
      mm < 0 || ss < 0)
    return BRAID_EINVAL;
  *out = days_from_civil(y, (unsigned)m + 1, (unsigned)d) * 86400 + hh * 3600 +
         mm * 60 + ss;
  return 0;
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

int braid_http_path_decode(const char *in, size_t len, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int ch = (unsigned char)in[i];
    if (ch == '%') {
      if (i + 2 >= len)
        return BRAID_EINVAL;
      int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
      if (h < 0 || l < 0)
        return BRAID_EINVAL;
      ch = h * 16 + l;
      i += 2;
    }
    if (ch == 0)
      return BRAID_EINVAL;
    out[o++] = (char)ch;
  }
  out[o] = '\0';
  return (int)o;
}
