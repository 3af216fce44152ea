#ifndef BRAID_VERSION_H
#define BRAID_VERSION_H
#define BRAID_VERSION_MAJOR 0
#define BRAID_VERSION_MINOR 1
#define BRAID_VERSION_PATCH 0
#define BRAID_VERSION_STRING "0.1.0"
/* The version of the library actually linked, e.g. "0.1.0". */
const char *braid_version(void);
#endif
