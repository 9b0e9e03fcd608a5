#ifndef CHEBACKUP_CLZ4_SHIM_H
#define CHEBACKUP_CLZ4_SHIM_H
#include <lz4.h>

/* LZ4_COMPRESSBOUND is a macro Swift cannot import; callers use LZ4_compressBound(). */
static inline int chb_lz4_compress(const void *src, void *dst, int srcSize, int dstCapacity) {
    return LZ4_compress_default((const char *)src, (char *)dst, srcSize, dstCapacity);
}

static inline int chb_lz4_decompress(const void *src, void *dst, int srcSize, int dstCapacity) {
    return LZ4_decompress_safe((const char *)src, (char *)dst, srcSize, dstCapacity);
}
#endif
