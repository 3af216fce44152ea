/* braid: the allocator hook.
 *
 * Every allocation braid makes goes through these four functions. An
 * embedder can route them to its own allocator (a constrained build, an
 * arena, a counting allocator in tests). The hook is process-wide, like
 * libc's malloc itself: set it before the first reactor is created and do
 * not change it while any braid object is alive.
 */
#ifndef BRAID_ALLOC_H
#define BRAID_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(*braid_malloc_fn)(size_t size);
typedef void *(*braid_realloc_fn)(void *ptr, size_t size);
typedef void *(*braid_calloc_fn)(size_t count, size_t size);
typedef void (*braid_free_fn)(void *ptr);

/* Replace braid's allocator. All four functions are required; passing any
 * NULL returns BRAID_EINVAL and changes nothing. braid_set_allocator(NULL,
 * NULL, NULL, NULL) is also BRAID_EINVAL: use braid_reset_allocator(). */
int braid_set_allocator(braid_malloc_fn m, braid_realloc_fn r,
                        braid_calloc_fn c, braid_free_fn f);

/* Go back to libc's malloc/realloc/calloc/free. */
void braid_reset_allocator(void);

/* The hooked functions, for code that wants to allocate memory that braid
 * later frees (or the reverse). */
void *braid_malloc(size_t size);
void *braid_realloc(void *ptr, size_t size);
void *braid_calloc(size_t count, size_t size);
void braid_free(void *ptr);

#ifdef __cplusplus
}
#endif
#endif
