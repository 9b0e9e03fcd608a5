#ifndef CHEBACKUP_CCURL_SHIM_H
#define CHEBACKUP_CCURL_SHIM_H
#include <curl/curl.h>

/* curl_easy_setopt/getinfo are variadic and not callable from Swift: typed wrappers. */
static inline CURLcode chb_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode chb_curl_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode chb_curl_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode chb_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode chb_curl_setopt_offset(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
typedef size_t (*chb_curl_data_cb)(char *, size_t, size_t, void *);
static inline CURLcode chb_curl_setopt_datacb(CURL *h, CURLoption o, chb_curl_data_cb v) { return curl_easy_setopt(h, o, v); }
typedef int (*chb_curl_seek_cb)(void *, curl_off_t, int);
static inline CURLcode chb_curl_setopt_seekcb(CURL *h, CURLoption o, chb_curl_seek_cb v) { return curl_easy_setopt(h, o, v); }
/* Hands libcurl a copy of `len` bytes (CURLOPT_CAINFO_BLOB, CURLOPT_SSLCERT_BLOB, CURLOPT_SSLKEY_BLOB). */
static inline CURLcode chb_curl_setopt_blob(CURL *h, CURLoption o, const void *data, size_t len) {
    struct curl_blob blob = { (void *)data, len, CURL_BLOB_COPY };
    return curl_easy_setopt(h, o, &blob);
}
typedef int (*chb_curl_xferinfo_cb)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t);
static inline CURLcode chb_curl_setopt_xferinfocb(CURL *h, CURLoption o, chb_curl_xferinfo_cb v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode chb_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode chb_curl_getinfo_offset(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
#endif
