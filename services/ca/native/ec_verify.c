/*
 * Baton's native ECDSA verifier for CSR signatures on P-256 and P-384 (optional; the service falls
 * back to node:crypto without it, see services/ca/src/pki/native-ec.ts).
 *
 * Why it exists: a CA sees each requester's public key once. node:crypto (OpenSSL 3 through EVP)
 * imports a fresh EC point in 90-100 us, more than the verification itself: the import runs the
 * full public-key check of SP 800-56A r3 5.6.2.3.3, whose last step (n * Q == infinity) is a whole
 * scalar multiplication. On a prime-order curve (cofactor 1, as P-256 and P-384 are: SEC 2 2.4.2,
 * 2.5.1) that step can never fail for a point on the curve, so the partial check of 5.6.2.3.4
 * (coordinates in range, point on the curve, not the identity) is equivalent, and it is what
 * o2i_ECPublicKey does. The signature check is OpenSSL's own ECDSA_verify, which refuses DER that
 * does not re-encode identically and r or s outside [1, n-1].
 *
 * It links against the OpenSSL inside the running Node (Node exports its symbols to addons), so
 * there is no second copy of OpenSSL and nothing to keep in step with it. Only N-API is used, so one
 * build serves every Node version with the same OpenSSL 3 ABI.
 *
 * That OpenSSL's error queue is per thread and shared with Node's TLS: SSL_get_error() reports any
 * error left on it as a failure of the connection being served. A refused point or signature
 * leaves errors there, so every entry point sets a mark first and pops back to it before
 * returning (as Node's own MarkPopErrorOnReturn does): a hostile CSR must not fail the next TLS
 * read on the event loop.
 */
#include <node_api.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stddef.h>

enum { CURVE_P256 = 0, CURVE_P384 = 1, CURVES };
enum { HASH_SHA256 = 0, HASH_SHA384 = 1, HASH_SHA512 = 2 };

static const int curve_nids[CURVES] = {NID_X9_62_prime256v1, NID_secp384r1};
/* SEC 1 2.3.3: an uncompressed point is 0x04 || X || Y. */
static const size_t point_sizes[CURVES] = {65, 97};
static EC_GROUP *groups[CURVES];
static pthread_once_t groups_once = PTHREAD_ONCE_INIT;

/* The groups are read-only once made, so every worker thread's copy of the module shares them. */
static void make_groups(void) {
  for (int i = 0; i < CURVES; i++) groups[i] = EC_GROUP_new_by_curve_name(curve_nids[i]);
}

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  return NULL;
}

static int read_int(napi_env env, napi_value value, int32_t *out) {
  return napi_get_value_int32(env, value, out) == napi_ok;
}

static int read_bytes(napi_env env, napi_value value, const unsigned char **data, size_t *size) {
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) return 0;
  void *p = NULL;
  if (napi_get_buffer_info(env, value, &p, size) != napi_ok) return 0;
  *data = p;
  return 1;
}

/* The point as an EC_KEY, or NULL if it is not an uncompressed point on the curve. */
static EC_KEY *point_key(int curve, const unsigned char *point, size_t size) {
  if (size != point_sizes[curve] || point[0] != 0x04) return NULL;
  EC_KEY *key = EC_KEY_new();
  if (key == NULL) return NULL;
  if (EC_KEY_set_group(key, groups[curve]) != 1) {
    EC_KEY_free(key);
    return NULL;
  }
  const unsigned char *p = point;
  /* EC_POINT_oct2point: refuses coordinates >= p and points off the curve (SEC 1 2.3.4). */
  if (o2i_ECPublicKey(&key, &p, (long)size) == NULL) {
    EC_KEY_free(key);
    return NULL;
  }
  return key;
}

static napi_value int_result(napi_env env, int32_t value) {
  napi_value result;
  napi_create_int32(env, value, &result);
  return result;
}

/* checkPoint(curve, point): 1 if point is an uncompressed point on the curve, else 0. */
static napi_value CheckPoint(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2)
    return throw_type(env, "checkPoint(curve, point)");
  int32_t curve;
  const unsigned char *point;
  size_t point_size;
  if (!read_int(env, argv[0], &curve) || curve < 0 || curve >= CURVES)
    return throw_type(env, "curve must be 0 (P-256) or 1 (P-384)");
  if (!read_bytes(env, argv[1], &point, &point_size)) return throw_type(env, "point must be a Buffer");
  ERR_set_mark();
  EC_KEY *key = point_key(curve, point, point_size);
  int ok = key != NULL;
  EC_KEY_free(key);
  ERR_pop_to_mark();
  return int_result(env, ok);
}

/*
 * verify(curve, hash, point, message, signature): 1 if signature (a DER Ecdsa-Sig-Value, RFC 5480
 * 2.2) is the point's signature over message hashed with hash; 0 if not; -1 if the point is not an
 * uncompressed point on the curve.
 */
static napi_value Verify(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5)
    return throw_type(env, "verify(curve, hash, point, message, signature)");
  int32_t curve, hash;
  const unsigned char *point, *message, *signature;
  size_t point_size, message_size, signature_size;
  if (!read_int(env, argv[0], &curve) || curve < 0 || curve >= CURVES)
    return throw_type(env, "curve must be 0 (P-256) or 1 (P-384)");
  if (!read_int(env, argv[1], &hash) || hash < HASH_SHA256 || hash > HASH_SHA512)
    return throw_type(env, "hash must be 0 (SHA-256), 1 (SHA-384) or 2 (SHA-512)");
  if (!read_bytes(env, argv[2], &point, &point_size)) return throw_type(env, "point must be a Buffer");
  if (!read_bytes(env, argv[3], &message, &message_size)) return throw_type(env, "message must be a Buffer");
  if (!read_bytes(env, argv[4], &signature, &signature_size))
    return throw_type(env, "signature must be a Buffer");

  ERR_set_mark();
  EC_KEY *key = point_key(curve, point, point_size);
  if (key == NULL) {
    ERR_pop_to_mark();
    return int_result(env, -1);
  }
  unsigned char digest[SHA512_DIGEST_LENGTH];
  int digest_size;
  if (hash == HASH_SHA256) {
    SHA256(message, message_size, digest);
    digest_size = SHA256_DIGEST_LENGTH;
  } else if (hash == HASH_SHA384) {
    SHA384(message, message_size, digest);
    digest_size = SHA384_DIGEST_LENGTH;
  } else {
    SHA512(message, message_size, digest);
    digest_size = SHA512_DIGEST_LENGTH;
  }
  /* A DER signature for P-384 is at most 104 bytes; anything far larger is not one. */
  int ok = signature_size <= 1024 &&
           ECDSA_verify(0, digest, digest_size, signature, (int)signature_size, key) == 1;
  EC_KEY_free(key);
  ERR_pop_to_mark();
  return int_result(env, ok);
}

NAPI_MODULE_INIT() {
  pthread_once(&groups_once, make_groups);
  if (groups[CURVE_P256] == NULL || groups[CURVE_P384] == NULL) {
    napi_throw_error(env, NULL, "OpenSSL has no P-256 or P-384 group");
    return NULL;
  }
  napi_value fn;
  napi_create_function(env, "checkPoint", NAPI_AUTO_LENGTH, CheckPoint, NULL, &fn);
  napi_set_named_property(env, exports, "checkPoint", fn);
  napi_create_function(env, "verify", NAPI_AUTO_LENGTH, Verify, NULL, &fn);
  napi_set_named_property(env, exports, "verify", fn);
  return exports;
}
