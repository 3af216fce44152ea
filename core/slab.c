/* Fixed-size object slabs; see core/slab.h for why. */
#include "core/slab.h"

#include "braid/alloc.h"

/* A page holds its link to the next page in a 16-byte header, then the
 * objects. 16 KiB pages hold ~170 deferreds: big enough that growth is rare,
 * small enough that a reactor that makes a handful of deferreds stays
 * small. */
#define BRAID__SLAB_PAGE 16384u
#define BRAID__SLAB_HDR 16u

void braid__slab_init(braid__slab *s, size_t size) {
  size = (size + 15u) & ~(size_t)15u;
  if (size < 16u)
    size = 16u;
  s->free = NULL;
  s->pages = NULL;
  s->size = size;
  s->per_page = (BRAID__SLAB_PAGE - BRAID__SLAB_HDR) / size;
  if (s->per_page == 0)
    s->per_page = 1;
  s->live = 0;
  s->npages = 0;
}

void *braid__slab_grow(braid__slab *s) {
  /* Zeroed, so that braid__slab_each() callers can tell never-used slots
   * by a zero state word (and valgrind sees no uninitialised reads). */
  char *page = braid_calloc(1, BRAID__SLAB_HDR + s->per_page * s->size);
  if (page == NULL)
    return NULL;
  *(void **)page = s->pages;
  s->pages = page;
  s->npages++;
  /* Thread the new objects onto the free list, keeping the first one for
   * the caller. Linked in address order so that a fresh page is walked
   * forward, which the hardware prefetcher likes. */
  char *first = page + BRAID__SLAB_HDR;
  for (size_t i = s->per_page - 1; i >= 1; i--) {
    char *obj = first + i * s->size;
    *(void **)obj = s->free;
    s->free = obj;
    BRAID__POISON(obj, s->size);
  }
  s->live++;
  return first;
}

void braid__slab_each(braid__slab *s, void (*fn)(void *obj, void *arg),
                      void *arg) {
  for (char *page = s->pages; page != NULL; page = *(void **)page) {
    char *first = page + BRAID__SLAB_HDR;
    for (size_t i = 0; i < s->per_page; i++) {
      char *obj = first + i * s->size;
#ifdef BRAID__ASAN
      if (__asan_address_is_poisoned(obj))
        continue;
#endif
      fn(obj, arg);
    }
  }
}

void braid__slab_destroy(braid__slab *s) {
  char *page = s->pages;
  while (page != NULL) {
    char *next = *(void **)page;
    BRAID__UNPOISON(page, BRAID__SLAB_HDR + s->per_page * s->size);
    braid_free(page);
    page = next;
  }
  s->free = NULL;
  s->pages = NULL;
  s->live = 0;
  s->npages = 0;
}
