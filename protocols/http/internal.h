/* braid: internals shared by the HTTP/1.x parser files. Not installed. */
#ifndef BRAID_PROTOCOLS_HTTP_INTERNAL_H
#define BRAID_PROTOCOLS_HTTP_INTERNAL_H

/* Character classes, one lookup per byte instead of chains of compares. */
enum {
  BRAID__HTTP_TCHAR = 1,  /* token character (RFC 9110 section 5.6.2) */
  BRAID__HTTP_FVCHAR = 2, /* allowed in a field value or reason phrase:
                             HTAB, SP, VCHAR, obs-text */
  BRAID__HTTP_TARGET = 4, /* allowed in a request-target: VCHAR */
};

extern const unsigned char braid__http_chars[256];

#define BRAID__HTTP_IS(cls, c)                                                 \
  ((braid__http_chars[(unsigned char)(c)] & (cls)) != 0)

#endif
