//! The Redis server a process connected to: how the connection is secured, what the server
//! is and which newer commands it knows. Logged under the connecting code's target.

use crate::telemetry::names;

/// The connecting code's module path, which log filters name.
const TARGET: &str = "redrive::broker::connect";

/// What a member's probe found, logged once when the member starts (and the info gauge set).
pub fn server_probed(flavor: &str, version: &str, xackdel: bool, hsetex: bool) {
    tracing::info!(
        target: TARGET,
        flavor,
        version,
        xackdel,
        hsetex,
        "redis server probed"
    );
    server_info(flavor, version);
}

/// Keeps `redrive_redis_info{flavor,version}` at 1 (set again at every health step, so the
/// recorder never drops it as idle).
pub fn server_info(flavor: &str, version: &str) {
    metrics::gauge!(names::REDIS_INFO, "flavor" => flavor.to_owned(), "version" => version.to_owned())
        .set(1.0);
}

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
