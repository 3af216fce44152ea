#include <stdlib.h>

#include "braid/alloc.h"
#include "braid/error.h"

/* The hook is process-wide by design (like malloc itself); it is set before
 * any reactor exists, so plain pointers are enough. */
static braid_malloc_fn braid__malloc_fn = malloc;
static braid_realloc_fn braid__realloc_fn = realloc;
static braid_calloc_fn braid__calloc_fn = calloc;
static braid_free_fn braid__free_fn = free;

int braid_set_allocator(braid_malloc_fn m, braid_realloc_fn r,
                        braid_calloc_fn c, braid_free_fn f) {
  if (m == NULL || r == NULL || c == NULL || f == NULL)
    return BRAID_EINVAL;
  braid__malloc_fn = m;
  braid__realloc_fn = r;
  braid__calloc_fn = c;
  braid__free_fn = f;
  return 0;
}

void braid_reset_allocator(void) {
  braid__malloc_fn = malloc;
  braid__realloc_fn = realloc;
  braid__calloc_fn = calloc;
  braid__free_fn = free;
}

void *braid_malloc(size_t size) { return braid__malloc_fn(size); }
void *braid_realloc(void *ptr, size_t size) {
  return braid__realloc_fn(ptr, size);
}
void *braid_calloc(size_t count, size_t size) {
  return braid__calloc_fn(count, size);
}
void braid_free(void *ptr) {
  if (ptr != NULL)
    braid__free_fn(ptr);
}
