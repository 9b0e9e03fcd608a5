#ifndef CHEBACKUP_CKDF_H
#define CHEBACKUP_CKDF_H
/* scrypt's memory-hard step (RFC 7914 §5, scryptROMix with BlockMix_salsa20/8), lane by lane.
   OpenSSL's EVP_PBE_scrypt runs the p lanes one after the other; the lanes are independent, so
   this runs them on up to `threads` threads. The PBKDF2-HMAC-SHA256 steps before and after stay
   OpenSSL's (Crypto.scrypt in the Repository module). */
#include <stddef.h>
#include <stdint.h>

/* `blocks` holds p lanes of 128·r bytes each (the output of the first PBKDF2 step); each lane is
   replaced by scryptROMix(lane, N). n must be a power of two of at least 2. The threads together
   use 128·r·n bytes, one lane's worth, like OpenSSL (each keeps every `threads`-th entry of its
   lane's table and recomputes the others). Returns 0, or -1 if the memory could not be had, in
   which case `blocks` is unspecified.
   Every buffer that held derived material is cleared before it is freed. */
int chb_scrypt_romix_lanes(uint8_t *blocks, uint32_t r, uint64_t n, uint32_t p, uint32_t threads);
#endif
