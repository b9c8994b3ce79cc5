# The optional native ECDSA verifier (ec_verify.c): see README.md here and docs/performance.md.
# Built by build-native.js during `npm run build`; nothing else in Baton needs a compiler.
{
  "targets": [
    {
      "target_name": "baton_ec_verify",
      "sources": ["ec_verify.c"],
      # The EC_KEY API is deprecated in OpenSSL 3 but kept through 3.x, and it is the only one that
      # takes an encoded point without the full public-key check (see ec_verify.c).
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-deprecated-declarations"],
      "xcode_settings": { "OTHER_CFLAGS": ["-Wno-deprecated-declarations"] }
    }
  ]
}
