# Baton's two native modules, built by build-native.js during `npm run build` (one node-gyp run);
# nothing else in Baton needs a compiler.
#   baton_ec_verify (ec_verify.c): the optional ECDSA verifier for CSRs, see docs/performance.md;
#     without it node:crypto verifies (slower, same answers).
#   baton_peer_credentials (peer_credentials.c): the kernel's credentials of a Unix-socket peer
#     (SO_PEERCRED, SO_PEERPIDFD) for the agent's Workload API. Not optional: without it the
#     agent's Workload API socket refuses to start. Linux only; elsewhere it builds, and throws.
{
  "targets": [
    {
      "target_name": "baton_ec_verify",
      "sources": ["ec_verify.c"],
      # The EC_KEY API is deprecated in OpenSSL 3 but kept through 3.x, and it is the only one that
      # takes an encoded point without the full public-key check (see ec_verify.c).
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-deprecated-declarations"],
      "xcode_settings": { "OTHER_CFLAGS": ["-Wno-deprecated-declarations"] }
    },
    {
      "target_name": "baton_peer_credentials",
      "sources": ["peer_credentials.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "xcode_settings": { "OTHER_CFLAGS": ["-Wall", "-Wextra"] }
    }
  ]
}
