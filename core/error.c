#include "braid/error.h"
#include "braid/version.h"

const char *braid_strerror(int err) {
  switch (err) {
#define BRAID__ERR_MSG(name, val, msg)                                         \
  case BRAID_##name:                                                           \
    return msg;
    BRAID_ERRNO_MAP(BRAID__ERR_MSG)
#undef BRAID__ERR_MSG
  default:
    return "unknown error";
  }
}

const char *braid_err_name(int err) {
  switch (err) {
#define BRAID__ERR_NAME(name, val, msg)                                        \
  case BRAID_##name:                                                           \
    return #name;
    BRAID_ERRNO_MAP(BRAID__ERR_NAME)
#undef BRAID__ERR_NAME
  default:
    return "UNKNOWN";
  }
}

const char *braid_version(void) { return BRAID_VERSION_STRING; }
