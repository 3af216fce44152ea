#include <stdio.h>
#include <string.h>

#include "braid/braid.h"

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "version") == 0) {
    printf("braid %s\n", braid_version());
    return 0;
  }
  fprintf(stderr, "usage: braid version\n");
  return 2;
}
