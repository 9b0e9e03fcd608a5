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

/* PBKDF2-HMAC-SHA256 (scrypt's first and last step, Crypto.scrypt). 1 on success. */
static inline int chb_pbkdf2_sha256(const void *pass, size_t passlen, const void *salt, size_t saltlen,
                                    int iterations, void *out, size_t outlen) {
    return PKCS5_PBKDF2_HMAC((const char *)pass, (int)passlen, (const unsigned char *)salt, (int)saltlen,
                             iterations, EVP_sha256(), (int)outlen, (unsigned char *)out);
}

/* OpenSSL's scrypt, lanes one after the other: the reference the tests hold Crypto.scrypt to. */
static inline int chb_scrypt(const void *pass, size_t passlen, const void *salt, size_t saltlen,
                             uint64_t n, uint64_t r, uint64_t p, void *out, size_t outlen) {
    uint64_t maxmem = 128 * r * n + 128 * r * p + (1u << 20) + 1024;
    return EVP_PBE_scrypt((const char *)pass, passlen, (const unsigned char *)salt, saltlen,
                          n, r, p, maxmem, (unsigned char *)out, outlen);
}

/* X.509 and PEM: the webhook's serving certificate (AdmissionWebhook/Certificates.swift). */
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* BIO_get_mem_data (macro): points *out at the memory BIO's bytes, returns their count. */
static inline long chb_pem_mem_data(BIO *bio, const char **out) {
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    *out = p;
    return n;
}

/* Adds one extension given in openssl.cnf syntax (e.g. "critical,CA:TRUE") to cert, with
 * issuer as the issuer for keyid lookups. Only call with constant, trusted values. 1 on success. */
static inline int chb_x509_add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return 0;
    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1;
}

/* Appends a dNSName (len bytes, IA5) to a GENERAL_NAMES stack. 1 on success; on failure
 * nothing is leaked and the stack is unchanged. */
static inline int chb_x509_san_push_dns(GENERAL_NAMES *names, const char *dns, size_t len) {
    ASN1_IA5STRING *s;
    GENERAL_NAME *g;
    if (len > 0x7fffffff) return 0;
    s = ASN1_IA5STRING_new();
    if (!s) return 0;
    if (ASN1_STRING_set(s, dns, (int)len) != 1) { ASN1_IA5STRING_free(s); return 0; }
    g = GENERAL_NAME_new();
    if (!g) { ASN1_IA5STRING_free(s); return 0; }
    GENERAL_NAME_set0_value(g, GEN_DNS, s); /* g owns s now */
    if (sk_GENERAL_NAME_push(names, g) <= 0) { GENERAL_NAME_free(g); return 0; }
    return 1;
}

/* The certificate's subjectAltName (caller frees with GENERAL_NAMES_free), or NULL if absent. */
static inline GENERAL_NAMES *chb_x509_get_san(const X509 *cert) {
    return (GENERAL_NAMES *)X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
}

static inline int chb_x509_san_count(const GENERAL_NAMES *names) {
    return sk_GENERAL_NAME_num(names);
}

/* The i-th entry's bytes if it is a dNSName (length in *len), else NULL. Borrowed from names. */
static inline const unsigned char *chb_x509_san_dns_at(const GENERAL_NAMES *names, int i, size_t *len) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
    if (!g || g->type != GEN_DNS || !g->d.dNSName) return NULL;
    *len = (size_t)ASN1_STRING_length(g->d.dNSName);
    return ASN1_STRING_get0_data(g->d.dNSName);
}
#endif
