# cython: language_level=3
"""Reuse of freed output memory for large results (NumPy's memory-handler API).

A new large array costs more than its computation on many machines: every
4 KiB page of it is faulted in and zeroed by the kernel on first touch, and
glibc maps and unmaps each block above 32 MiB afresh. An op called in a loop
(a training step, a sweep over a dataset) pays that on every call, for memory
it freed the moment before. fastinterp's CPU results of at least 1 MiB are
allocated through the handler below: a freed block is kept (up to a byte
limit, oldest evicted first) and handed to the next result of the same size
class, already faulted in. The arrays are ordinary NumPy arrays that own
their data; NumPy gives each array's memory back through the handler that
allocated it, so nothing else in the process changes.

Blocks carry a 64-byte header holding their capacity, so ``free`` and
``realloc`` need no size from NumPy; user pointers are 64-byte aligned.
Size classes round up by at most 1/8 (untouched tail pages are never faulted).
"""

cdef extern from *:
    """
    #define NPY_TARGET_VERSION NPY_1_22_API_VERSION
    #include <stdlib.h>
    #include <string.h>
    #include <stdint.h>
    #include <pthread.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif

    #define FI_OC_HEADER 64
    #define FI_OC_SLOTS 16
    #define FI_OC_HUGE (4u << 20)

    typedef struct { char* base; size_t cap; } fi_oc_block;

    static pthread_mutex_t fi_oc_lock = PTHREAD_MUTEX_INITIALIZER;
    static fi_oc_block fi_oc_kept[FI_OC_SLOTS];   /* oldest first */
    static int fi_oc_count = 0;
    static size_t fi_oc_kept_bytes = 0;
    static size_t fi_oc_limit = 0;
    static unsigned long long fi_oc_hits = 0, fi_oc_misses = 0;

    /* Capacity for a request: a multiple of 4 KiB, and of 1/8 of the request's
       leading power of two above 64 KiB (at most 12.5% more than asked). */
    static size_t fi_oc_class(size_t size) {
        size_t step = 4096;
        if (size > (64u << 10)) {
            size_t top = (size_t)1 << (63 - __builtin_clzll((unsigned long long)size));
            if (top / 8 > step) step = top / 8;
        }
        if (size > SIZE_MAX - step) return 0;
        return (size + step - 1) / step * step;
    }

    static char* fi_oc_new_block(size_t cap) {
        void* base = NULL;
        if (cap > SIZE_MAX - FI_OC_HEADER || posix_memalign(&base, 64, cap + FI_OC_HEADER) != 0)
            return NULL;
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (cap >= FI_OC_HUGE) {   /* as NumPy's own allocator does for large arrays */
            uintptr_t lo = ((uintptr_t)base + 4095) & ~(uintptr_t)4095;
            uintptr_t hi = ((uintptr_t)base + cap + FI_OC_HEADER) & ~(uintptr_t)4095;
            if (hi > lo) madvise((void*)lo, hi - lo, MADV_HUGEPAGE);
        }
    #endif
        *(size_t*)base = cap;
        return (char*)base;
    }

    static void* fi_oc_malloc(void* ctx, size_t size) {
        size_t cap = fi_oc_class(size ? size : 1);
        char* base = NULL;
        (void)ctx;
        if (cap == 0) return NULL;
        pthread_mutex_lock(&fi_oc_lock);
        for (int i = fi_oc_count - 1; i >= 0; --i) {
            if (fi_oc_kept[i].cap == cap) {
                base = fi_oc_kept[i].base;
                fi_oc_kept_bytes -= cap;
                memmove(fi_oc_kept + i, fi_oc_kept + i + 1,
                        (size_t)(fi_oc_count - i - 1) * sizeof(fi_oc_block));
                --fi_oc_count;
                break;
            }
        }
        if (base) ++fi_oc_hits; else ++fi_oc_misses;
        pthread_mutex_unlock(&fi_oc_lock);
        if (!base) base = fi_oc_new_block(cap);
        return base ? base + FI_OC_HEADER : NULL;
    }

    /* Keep blocks while they fit in the limit; returns how many blocks of
       ``evicted`` the caller must free (outside the lock). */
    static int fi_oc_trim_locked(size_t room, char** evicted) {
        int n = 0;
        while (fi_oc_count > 0 && (fi_oc_kept_bytes + room > fi_oc_limit
                                   || (room && fi_oc_count == FI_OC_SLOTS))) {
            evicted[n++] = fi_oc_kept[0].base;
            fi_oc_kept_bytes -= fi_oc_kept[0].cap;
            memmove(fi_oc_kept, fi_oc_kept + 1, (size_t)(fi_oc_count - 1) * sizeof(fi_oc_block));
            --fi_oc_count;
        }
        return n;
    }

    static void fi_oc_free(void* ctx, void* ptr, size_t size) {
        char* evicted[FI_OC_SLOTS + 1];
        int n = 0;
        (void)ctx; (void)size;
        if (!ptr) return;
        char* base = (char*)ptr - FI_OC_HEADER;
        size_t cap = *(size_t*)base;
        pthread_mutex_lock(&fi_oc_lock);
        if (cap <= fi_oc_limit) {
            n = fi_oc_trim_locked(cap, evicted);
            fi_oc_kept[fi_oc_count].base = base;
            fi_oc_kept[fi_oc_count].cap = cap;
            ++fi_oc_count;
            fi_oc_kept_bytes += cap;
        } else {
            evicted[n++] = base;
        }
        pthread_mutex_unlock(&fi_oc_lock);
        for (int i = 0; i < n; ++i) free(evicted[i]);
    }

    static void* fi_oc_calloc(void* ctx, size_t nelem, size_t elsize) {
        if (elsize && nelem > SIZE_MAX / elsize) return NULL;
        void* p = fi_oc_malloc(ctx, nelem * elsize);
        if (p) memset(p, 0, nelem * elsize);
        return p;
    }

    static void* fi_oc_realloc(void* ctx, void* ptr, size_t new_size) {
        if (!ptr) return fi_oc_malloc(ctx, new_size);
        size_t cap = *(size_t*)((char*)ptr - FI_OC_HEADER);
        if (new_size <= cap && fi_oc_class(new_size) == cap) return ptr;
        void* p = fi_oc_malloc(ctx, new_size);
        if (!p) return NULL;
        memcpy(p, ptr, new_size < cap ? new_size : cap);
        fi_oc_free(ctx, ptr, cap);
        return p;
    }

    /* Changes the limit; blocks beyond it are freed. Returns the old limit. */
    static size_t fi_oc_set_limit(size_t limit) {
        char* evicted[FI_OC_SLOTS + 1];
        pthread_mutex_lock(&fi_oc_lock);
        size_t old = fi_oc_limit;
        fi_oc_limit = limit;
        int n = fi_oc_trim_locked(0, evicted);
        pthread_mutex_unlock(&fi_oc_lock);
        for (int i = 0; i < n; ++i) free(evicted[i]);
        return old;
    }

    static void fi_oc_info(size_t* out) {
        pthread_mutex_lock(&fi_oc_lock);
        out[0] = fi_oc_limit; out[1] = fi_oc_kept_bytes; out[2] = (size_t)fi_oc_count;
        out[3] = (size_t)fi_oc_hits; out[4] = (size_t)fi_oc_misses;
        pthread_mutex_unlock(&fi_oc_lock);
    }

    /* A child process forked while another thread held the lock must not wait for it. */
    static void fi_oc_before_fork(void) { pthread_mutex_lock(&fi_oc_lock); }
    static void fi_oc_after_fork_parent(void) { pthread_mutex_unlock(&fi_oc_lock); }
    static void fi_oc_after_fork_child(void) { pthread_mutex_init(&fi_oc_lock, NULL); }
    static int fi_oc_register_fork(void) {
        return pthread_atfork(fi_oc_before_fork, fi_oc_after_fork_parent, fi_oc_after_fork_child);
    }
    """
    size_t fi_oc_set_limit(size_t limit) nogil
    void fi_oc_info(size_t* out) nogil
    int fi_oc_register_fork() nogil
    void* fi_oc_malloc(void* ctx, size_t size) nogil
    void* fi_oc_calloc(void* ctx, size_t nelem, size_t elsize) nogil
    void* fi_oc_realloc(void* ctx, void* ptr, size_t new_size) nogil
    void fi_oc_free(void* ctx, void* ptr, size_t size) nogil

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void* ctx
        void* (*malloc)(void*, size_t) nogil
        void* (*calloc)(void*, size_t, size_t) nogil
        void* (*realloc)(void*, void*, size_t) nogil
        void (*free)(void*, void*, size_t) nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        unsigned char version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)
    int _import_array() except -1

from cpython.pycapsule cimport PyCapsule_New
from libc.string cimport strcpy
import numpy as np

_import_array()

cdef PyDataMem_Handler _handler
strcpy(_handler.name, b"fastinterp_output_cache")
_handler.version = 1
_handler.allocator.ctx = NULL
_handler.allocator.malloc = fi_oc_malloc
_handler.allocator.calloc = fi_oc_calloc
_handler.allocator.realloc = fi_oc_realloc
_handler.allocator.free = fi_oc_free
# Arrays hold a reference to the capsule, and the module is never unloaded.
cdef object _capsule = PyCapsule_New(&_handler, b"mem_handler", NULL)
if fi_oc_register_fork() != 0:
    raise OSError("fastinterp: pthread_atfork failed for the output cache")


def empty(shape, dtype):
    """``np.empty(shape, dtype)`` whose memory comes from, and returns to, the cache."""
    old = PyDataMem_SetHandler(_capsule)
    try:
        return np.empty(shape, dtype)
    finally:
        PyDataMem_SetHandler(old)


def set_limit(size_t limit):
    """Set the most bytes kept for reuse (0 keeps none); returns the previous limit."""
    return fi_oc_set_limit(limit)


def info():
    """``(limit, kept_bytes, kept_blocks, hits, misses)``."""
    cdef size_t out[5]
    fi_oc_info(out)
    return tuple(out[i] for i in range(5))
