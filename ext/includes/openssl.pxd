# libcrypto (OpenSSL 3.0) declarations for ext/_srtp.pyx: only what the SRTP
# transforms use. Extern-only, so any module can cimport it without a runtime
# dependency on another extension module.

cdef extern from *:
    """
    /* SHA1_Init/Update/Final are deprecated in OpenSSL 3.0 but are the only SHA-1
       interface whose state is a plain struct: HMAC-SHA1 then costs one struct
       copy per packet. Every EVP digest/MAC path (EVP_MAC, HMAC_CTX,
       EVP_MD_CTX_copy_ex) mallocs twice per packet and was 15-35% slower when
       measured (see _srtp.pyx). Must come before the first OpenSSL header. */
    #ifndef OPENSSL_SUPPRESS_DEPRECATED
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    #endif
    """

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct ENGINE:
        pass

    # EVP is used only for the key derivation (once per context); the per-packet
    # ciphers use the provider interface below.
    const EVP_CIPHER* EVP_aes_128_ctr()
    const EVP_CIPHER* EVP_aes_256_ctr()

    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx)

    # enc: 1 encrypt, 0 decrypt, -1 keep
    int EVP_CipherInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
                          const unsigned char* key, const unsigned char* iv, int enc)
    int EVP_CipherUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                         const unsigned char* inp, int inl)


# --- provider cipher interface (OpenSSL 3: core.h, core_dispatch.h, provider.h) ---
#
# The per-packet SRTP ciphers call the provider's cipher functions directly
# (provider-cipher(7)) instead of going through EVP_CIPHER_CTX: OpenSSL 3.0's EVP
# layer re-queries the IV length through OSSL_PARAMs on every EVP_CipherInit_ex
# and turns each EVP_CIPHER_CTX_ctrl into an OSSL_PARAM round trip, about 85 ns of
# a 435 ns AES-128-GCM seal of 1,100 bytes (see _srtp.pyx). The functions are the
# ones EVP itself calls, found with public, ABI-stable calls: EVP_CIPHER_fetch,
# EVP_CIPHER_get0_provider, OSSL_PROVIDER_query_operation.

cdef extern from "openssl/core.h" nogil:
    ctypedef struct OSSL_PROVIDER:
        pass
    ctypedef struct OSSL_LIB_CTX:
        pass

    ctypedef struct OSSL_DISPATCH:
        int function_id
        void (*function)() noexcept nogil

    ctypedef struct OSSL_ALGORITHM:
        const char* algorithm_names       # aliases, ':'-separated
        const char* property_definition
        const OSSL_DISPATCH* implementation
        const char* algorithm_description

    ctypedef struct OSSL_PARAM:
        const char* key
        unsigned int data_type
        void* data
        size_t data_size
        size_t return_size

    enum:
        OSSL_PARAM_OCTET_STRING


cdef extern from "openssl/params.h" nogil:
    size_t OSSL_PARAM_UNMODIFIED


cdef extern from "openssl/core_names.h" nogil:
    const char* OSSL_CIPHER_PARAM_AEAD_TAG   # "tag"


cdef extern from "openssl/core_dispatch.h" nogil:
    enum:
        OSSL_OP_CIPHER
        OSSL_FUNC_CIPHER_NEWCTX
        OSSL_FUNC_CIPHER_ENCRYPT_INIT
        OSSL_FUNC_CIPHER_DECRYPT_INIT
        OSSL_FUNC_CIPHER_UPDATE
        OSSL_FUNC_CIPHER_FINAL
        OSSL_FUNC_CIPHER_FREECTX
        OSSL_FUNC_CIPHER_GET_CTX_PARAMS


# The provider cipher functions (provider-cipher(7)); `cctx` is the provider's own
# context, made by newctx and freed (and cleansed) by freectx.
ctypedef void* (*ossl_cipher_newctx_fn)(void* provctx) noexcept nogil
ctypedef int (*ossl_cipher_init_fn)(void* cctx, const unsigned char* key, size_t keylen,
                                    const unsigned char* iv, size_t ivlen,
                                    const OSSL_PARAM* params) noexcept nogil
# out NULL: `in` is additional authenticated data (AEAD); outsize must still be >= inl
ctypedef int (*ossl_cipher_update_fn)(void* cctx, unsigned char* out, size_t* outl,
                                      size_t outsize, const unsigned char* inp,
                                      size_t inl) noexcept nogil
ctypedef int (*ossl_cipher_final_fn)(void* cctx, unsigned char* out, size_t* outl,
                                     size_t outsize) noexcept nogil
ctypedef void (*ossl_cipher_freectx_fn)(void* cctx) noexcept nogil
ctypedef int (*ossl_cipher_get_ctx_params_fn)(void* cctx, OSSL_PARAM* params) noexcept nogil


cdef extern from "openssl/evp.h" nogil:
    EVP_CIPHER* EVP_CIPHER_fetch(OSSL_LIB_CTX* libctx, const char* algorithm,
                                 const char* properties)
    void EVP_CIPHER_free(EVP_CIPHER* cipher)
    const OSSL_PROVIDER* EVP_CIPHER_get0_provider(const EVP_CIPHER* cipher)


cdef extern from "openssl/provider.h" nogil:
    const OSSL_ALGORITHM* OSSL_PROVIDER_query_operation(const OSSL_PROVIDER* prov,
                                                        int operation_id, int* no_cache)
    void OSSL_PROVIDER_unquery_operation(const OSSL_PROVIDER* prov, int operation_id,
                                         const OSSL_ALGORITHM* algs)
    void* OSSL_PROVIDER_get0_provider_ctx(const OSSL_PROVIDER* prov)


cdef extern from "openssl/sha.h" nogil:
    enum:
        SHA_DIGEST_LENGTH   # 20
        SHA_CBLOCK          # 64

    ctypedef struct SHA_CTX:
        pass

    int SHA1_Init(SHA_CTX* c)
    int SHA1_Update(SHA_CTX* c, const void* data, size_t len)
    int SHA1_Final(unsigned char* md, SHA_CTX* c)


cdef extern from "openssl/crypto.h" nogil:
    # constant-time comparison: 0 when equal
    int CRYPTO_memcmp(const void* a, const void* b, size_t len)
    void OPENSSL_cleanse(void* ptr, size_t len)
