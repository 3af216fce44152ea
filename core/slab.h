/* Fixed-size object slabs: one free list per object size, growing in pages.
 *
 * Why: deferreds, chain links and failures are created and dropped at a
 * high rate (every network operation makes a few). A free list makes each
 * allocation two loads and a store, keeps recently freed (cache-hot)
 * objects first in line, and after warm-up calls the allocator hook not at
 * all. Each slab belongs to one reactor and is used only on its thread, so
 * there is no locking. Pages are returned to the allocator only when the
 * slab is destroyed (reactor teardown): a burst leaves its pages behind for
 * the next burst, which is the point.
 *
 * Under AddressSanitizer, free objects are poisoned, so a use after free of
 * a slab object is reported just as one of malloc'd memory would be.
 */
#ifndef BRAID_CORE_SLAB_H
#define BRAID_CORE_SLAB_H

#include <stddef.h>
#include <stdint.h>

#if defined(__SANITIZE_ADDRESS__)
#define BRAID__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRAID__ASAN 1
#endif
#endif

#ifdef BRAID__ASAN
#include <sanitizer/asan_interface.h>
#define BRAID__POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define BRAID__UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define BRAID__POISON(p, n) ((void)(p), (void)(n))
#define BRAID__UNPOISON(p, n) ((void)(p), (void)(n))
#endif

typedef struct braid__slab {
  void *free;      /* free objects, linked through their first word */
  void *pages;     /* pages, linked through their first word */
  size_t size;     /* object size, a multiple of 16 */
  size_t per_page; /* objects per page */
  size_t live;     /* objects handed out and not yet freed */
  size_t npages;
} braid__slab;

/* Set up a slab of `size`-byte objects (rounded up to 16). Allocates
 * nothing until the first braid__slab_alloc(). */
void braid__slab_init(braid__slab *s, size_t size);

/* Slow path of braid__slab_alloc: add a page. NULL when out of memory. */
void *braid__slab_grow(braid__slab *s);

/* Free every page. Objects still live are gone too: the owner must have
 * dealt with them (see braid__slab_each). */
void braid__slab_destroy(braid__slab *s);

/* Call fn(obj, arg) for every object slot of every page, free or live;
 * free slots are skipped under ASan (they are poisoned) and otherwise must
 * be told apart by the caller (a state word that free() overwrites).
 * Used only at teardown to find objects still alive. */
void braid__slab_each(braid__slab *s, void (*fn)(void *obj, void *arg),
                      void *arg);

static inline void *braid__slab_alloc(braid__slab *s) {
  void *p = s->free;
  if (p == NULL)
    return braid__slab_grow(s);
  BRAID__UNPOISON(p, s->size);
  s->free = *(void **)p;
  s->live++;
  return p;
}

static inline void braid__slab_free(braid__slab *s, void *p) {
  *(void **)p = s->free;
  s->free = p;
  s->live--;
  BRAID__POISON(p, s->size);
}

#endif
