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

    enum:
        EVP_CTRL_GCM_GET_TAG
        EVP_CTRL_GCM_SET_TAG

    const EVP_CIPHER* EVP_aes_128_ctr()
    const EVP_CIPHER* EVP_aes_256_ctr()
    const EVP_CIPHER* EVP_aes_128_gcm()
    const EVP_CIPHER* EVP_aes_256_gcm()

    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* ctx, int type, int arg, void* ptr)

    # enc: 1 encrypt, 0 decrypt, -1 keep. With cipher and key NULL only the IV
    # is (re)set: the key schedule from the first call is kept.
    int EVP_CipherInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
                          const unsigned char* key, const unsigned char* iv, int enc)
    # out NULL: `in` is additional authenticated data (GCM)
    int EVP_CipherUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                         const unsigned char* inp, int inl)
    int EVP_CipherFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* outm, int* outl)


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
