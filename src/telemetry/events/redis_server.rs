//! The Redis server a process connected to: how the connection is secured. Logged under the
//! connecting code's target.

/// The connecting code's module path, which log filters name.
const TARGET: &str = "redrive::broker::connect";

/// Connected with `redis.tls_insecure = true`: the server's certificate is not checked. Logged
/// at every start (every connect of a process), loudly, as long as the setting stays on.
pub fn tls_insecure(server: &str) {
    tracing::warn!(
        target: TARGET,
        server,
        "INSECURE: redis.tls_insecure = true, so the Redis server's TLS certificate is NOT \
         verified: anyone on the network path can read and change every task. Set \
         redis.tls_ca_file to the authority that signed the server's certificate and remove \
         redis.tls_insecure"
    );
}
