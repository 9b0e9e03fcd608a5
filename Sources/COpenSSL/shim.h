#ifndef CHEBACKUP_COPENSSL_SHIM_H
#define CHEBACKUP_COPENSSL_SHIM_H
/* Typed wrappers around the OpenSSL calls che-backup uses. No OpenSSL type escapes the
 * Repository target: Swift sees only these functions and opaque pointers. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stddef.h>

static inline int chb_random(void *out, size_t n) {
    return RAND_bytes((unsigned char *)out, (int)n);
}

static inline int chb_sha256(const void *data, size_t n, void *out32) {
    unsigned int len = 0;
    return EVP_Digest(data, n, (unsigned char *)out32, &len, EVP_sha256(), NULL);
}

/* Incremental SHA-256 (pack names are the hash of the whole pack). */
static inline void *chb_sha256_new(void) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) { EVP_MD_CTX_free(c); return NULL; }
    return c;
}
static inline int chb_sha256_update(void *ctx, const void *data, size_t n) {
    return EVP_DigestUpdate((EVP_MD_CTX *)ctx, data, n);
}
static inline int chb_sha256_final(void *ctx, void *out32) {
    unsigned int len = 0;
    return EVP_DigestFinal_ex((EVP_MD_CTX *)ctx, (unsigned char *)out32, &len);
}
static inline void chb_sha256_free(void *ctx) { EVP_MD_CTX_free((EVP_MD_CTX *)ctx); }

static inline int chb_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n, void *out32) {
    unsigned int len = 0;
    return HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data, n,
                (unsigned char *)out32, &len) != NULL;
}

/* AES-256-GCM with a 12-byte nonce and a 16-byte tag. Returns 1 on success. */
static inline int chb_aes256gcm_seal(const void *key32, const void *nonce12,
                                     const void *aad, size_t aadlen,
                                     const void *in, size_t inlen, void *out, void *tag16) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = 0, len = 0;
    if (!c) return 0;
    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) goto done;
    if (EVP_EncryptInit_ex(c, NULL, NULL, (const unsigned char *)key32, (const unsigned char *)nonce12) != 1) goto done;
    if (aadlen > 0 && EVP_EncryptUpdate(c, NULL, &len, (const unsigned char *)aad, (int)aadlen) != 1) goto done;
    if (inlen > 0 && EVP_EncryptUpdate(c, (unsigned char *)out, &len, (const unsigned char *)in, (int)inlen) != 1) goto done;
    if (EVP_EncryptFinal_ex(c, (unsigned char *)out + len, &len) != 1) goto done;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag16) != 1) goto done;
    ok = 1;
done:
    EVP_CIPHER_CTX_free(c);
    return ok;
}

/* Returns 1 when the tag verifies; 0 on any tampering. */
static inline int chb_aes256gcm_open(const void *key32, const void *nonce12,
                                     const void *aad, size_t aadlen,
                                     const void *in, size_t inlen, const void *tag16, void *out) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = 0, len = 0;
    if (!c) return 0;
    if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) goto done;
    if (EVP_DecryptInit_ex(c, NULL, NULL, (const unsigned char *)key32, (const unsigned char *)nonce12) != 1) goto done;
    if (aadlen > 0 && EVP_DecryptUpdate(c, NULL, &len, (const unsigned char *)aad, (int)aadlen) != 1) goto done;
    if (inlen > 0 && EVP_DecryptUpdate(c, (unsigned char *)out, &len, (const unsigned char *)in, (int)inlen) != 1) goto done;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag16) != 1) goto done;
    if (EVP_DecryptFinal_ex(c, (unsigned char *)out + len, &len) != 1) goto done;
    ok = 1;
done:
    EVP_CIPHER_CTX_free(c);
    return ok;
}

static inline int chb_scrypt(const void *pass, size_t passlen, const void *salt, size_t saltlen,
                             uint64_t n, uint64_t r, uint64_t p, void *out, size_t outlen) {
    uint64_t maxmem = 128 * r * n + 128 * r * p + (1u << 20) + 1024;
    return EVP_PBE_scrypt((const char *)pass, passlen, (const unsigned char *)salt, saltlen,
                          n, r, p, maxmem, (unsigned char *)out, outlen);
}
#endif
