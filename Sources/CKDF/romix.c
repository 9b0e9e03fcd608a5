/* scryptROMix (RFC 7914 §4-§5) for the p lanes of one scrypt, on several threads. The result is
   byte for byte that of OpenSSL's EVP_PBE_scrypt (CryptoTests compares them for many parameters,
   and against the RFC's test vectors). */
#include "ckdf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ROTL(a, b) (((a) << (b)) | ((a) >> (32 - (b))))

static inline uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void store_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Salsa20/8 core (RFC 7914 §3): b = b + 8 rounds of b. */
static void salsa20_8(uint32_t b[16]) {
    uint32_t x[16];
    memcpy(x, b, sizeof x);
    for (int i = 0; i < 8; i += 2) {
        /* columns */
        x[4] ^= ROTL(x[0] + x[12], 7);   x[8] ^= ROTL(x[4] + x[0], 9);
        x[12] ^= ROTL(x[8] + x[4], 13);  x[0] ^= ROTL(x[12] + x[8], 18);
        x[9] ^= ROTL(x[5] + x[1], 7);    x[13] ^= ROTL(x[9] + x[5], 9);
        x[1] ^= ROTL(x[13] + x[9], 13);  x[5] ^= ROTL(x[1] + x[13], 18);
        x[14] ^= ROTL(x[10] + x[6], 7);  x[2] ^= ROTL(x[14] + x[10], 9);
        x[6] ^= ROTL(x[2] + x[14], 13);  x[10] ^= ROTL(x[6] + x[2], 18);
        x[3] ^= ROTL(x[15] + x[11], 7);  x[7] ^= ROTL(x[3] + x[15], 9);
        x[11] ^= ROTL(x[7] + x[3], 13);  x[15] ^= ROTL(x[11] + x[7], 18);
        /* rows */
        x[1] ^= ROTL(x[0] + x[3], 7);    x[2] ^= ROTL(x[1] + x[0], 9);
        x[3] ^= ROTL(x[2] + x[1], 13);   x[0] ^= ROTL(x[3] + x[2], 18);
        x[6] ^= ROTL(x[5] + x[4], 7);    x[7] ^= ROTL(x[6] + x[5], 9);
        x[4] ^= ROTL(x[7] + x[6], 13);   x[5] ^= ROTL(x[4] + x[7], 18);
        x[11] ^= ROTL(x[10] + x[9], 7);  x[8] ^= ROTL(x[11] + x[10], 9);
        x[9] ^= ROTL(x[8] + x[11], 13);  x[10] ^= ROTL(x[9] + x[8], 18);
        x[12] ^= ROTL(x[15] + x[14], 7); x[13] ^= ROTL(x[12] + x[15], 9);
        x[14] ^= ROTL(x[13] + x[12], 13); x[15] ^= ROTL(x[14] + x[13], 18);
    }
    for (int i = 0; i < 16; i++) b[i] += x[i];
}

/* BlockMix_salsa20/8 (RFC 7914 §4): `in` (2r blocks of 16 words) → `out`, which must not overlap
   it. Y_i goes to block i/2 for even i and to block r + i/2 for odd i. */
static void block_mix(const uint32_t *in, uint32_t *out, uint32_t r) {
    uint32_t x[16];
    memcpy(x, in + (size_t)(2 * r - 1) * 16, sizeof x);
    for (uint32_t i = 0; i < 2 * r; i++) {
        const uint32_t *block = in + (size_t)i * 16;
        for (int k = 0; k < 16; k++) x[k] ^= block[k];
        salsa20_8(x);
        memcpy(out + ((size_t)(i & 1) * r + i / 2) * 16, x, sizeof x);
    }
}

/* scryptROMix (RFC 7914 §5) of one lane of 128·r bytes, in place, keeping only every
   `interval`-th V_i: V_j for other j is recomputed from the kept V_(j - j mod interval) by
   (j mod interval) BlockMix steps, which gives the same bytes with 1/interval of the memory for
   (interval - 1)/2 more BlockMix calls per step of the second loop on average.
   v: 32·r·ceil(n/interval) words; scratch: 128·r words. */
static void romix(uint8_t *lane, uint32_t r, uint64_t n, uint32_t interval, uint32_t *v, uint32_t *scratch) {
    const size_t words = (size_t)32 * r;
    uint32_t *x = scratch, *y = scratch + words, *a = scratch + 2 * words, *b = scratch + 3 * words, *t;
    for (size_t k = 0; k < words; k++) x[k] = load_le32(lane + 4 * k);
    for (uint64_t i = 0; i < n; i++) {
        if (i % interval == 0) memcpy(v + (i / interval) * words, x, words * sizeof *x);
        block_mix(x, y, r);
        t = x; x = y; y = t;
    }
    for (uint64_t i = 0; i < n; i++) {
        /* Integerify: the last 64-byte block's first 8 bytes, little endian, mod n. */
        const uint32_t *last = x + (size_t)(2 * r - 1) * 16;
        uint64_t j = ((uint64_t)last[0] | (uint64_t)last[1] << 32) & (n - 1);
        const uint32_t *vj = v + (j / interval) * words;
        uint64_t steps = j % interval;
        if (steps > 0) {
            block_mix(vj, a, r);
            while (--steps > 0) {
                block_mix(a, b, r);
                t = a; a = b; b = t;
            }
            vj = a;
        }
        for (size_t k = 0; k < words; k++) x[k] ^= vj[k];
        block_mix(x, y, r);
        t = x; x = y; y = t;
    }
    for (size_t k = 0; k < words; k++) store_le32(lane + 4 * k, x[k]);
}

static void clear_free(void *p, size_t size) {
    if (p == NULL) return;
    /* explicit_bzero: not optimised away, unlike a memset before free. */
    explicit_bzero(p, size);
    free(p);
}

struct lanes_job {
    uint8_t *blocks;
    uint32_t r, p, first, stride, interval;
    uint64_t n;
    int failed;
};

static void *run_lanes(void *argument) {
    struct lanes_job *job = argument;
    const size_t lane_bytes = (size_t)128 * job->r;
    const size_t v_bytes = lane_bytes * ((job->n + job->interval - 1) / job->interval);
    const size_t scratch_bytes = 4 * lane_bytes;
    uint32_t *v = malloc(v_bytes);
    uint32_t *scratch = malloc(scratch_bytes);
    if (v == NULL || scratch == NULL) {
        job->failed = 1;
    } else {
        for (uint32_t lane = job->first; lane < job->p; lane += job->stride)
            romix(job->blocks + lane * lane_bytes, job->r, job->n, job->interval, v, scratch);
    }
    clear_free(v, v_bytes);
    clear_free(scratch, scratch_bytes);
    return NULL;
}

int chb_scrypt_romix_lanes(uint8_t *blocks, uint32_t r, uint64_t n, uint32_t p, uint32_t threads) {
    enum { max_threads = 16 };
    if (r == 0 || p == 0 || n < 2 || (n & (n - 1)) != 0) return -1;
    /* 128·r·n must fit in size_t with room (the bounds callers check are far below this). */
    if (n > ((uint64_t)1 << 32) || r > 1024) return -1;
    if (threads < 1) threads = 1;
    if (threads > p) threads = p;
    if (threads > max_threads) threads = max_threads;
    struct lanes_job jobs[max_threads];
    pthread_t ids[max_threads];
    int started[max_threads] = {0};
    for (uint32_t i = 0; i < threads; i++) {
        /* Each of t threads keeps every t-th V_i: together they hold what one lane at a time
           would (128·r·n bytes, as OpenSSL's scrypt), and a lane costs 2.5n BlockMix calls
           instead of 2n on two threads. */
        jobs[i] = (struct lanes_job){ .blocks = blocks, .r = r, .p = p, .first = i, .stride = threads,
                                      .interval = threads, .n = n, .failed = 0 };
    }
    for (uint32_t i = 1; i < threads; i++) started[i] = pthread_create(&ids[i], NULL, run_lanes, &jobs[i]) == 0;
    run_lanes(&jobs[0]);
    int failed = jobs[0].failed;
    for (uint32_t i = 1; i < threads; i++) {
        /* A thread that could not be started leaves its lanes to this one. */
        if (started[i]) pthread_join(ids[i], NULL); else run_lanes(&jobs[i]);
        failed |= jobs[i].failed;
    }
    return failed ? -1 : 0;
}
