//! The Redis client's errors as the crate's [`Error`]: only `broker/` names the client. Also
//! how the broker tells errors apart (a server code, out of memory, a missing group) and how
//! it bounds a refusal's text.

use crate::error::{Error, RedisFailure};

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Error {
        let code = e.code().map(str::to_owned);
        // A refusal Redis answered and a connection that could not be opened are clean: nothing
        // ran. A lost or unreadable reply may hide a request that did run.
        // On a cluster, a redirection or refusal that reached us past the client's own retries
        // (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) was answered before anything ran: clean. A
        // script that stopped part-way because one of the keys it builds (a task record, a
        // stats bucket) is in a slot being migrated, or the cluster went down under it, may
        // have written before that key: it may have run.
        let lost = match e.kind() {
            redis::ErrorKind::Io => !e.is_connection_refusal(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => true,
            _ if matches!(e.code(), Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")) => false,
            _ => script_stopped_part_way(&e.to_string()),
        };
        let failure = RedisFailure::new(e.to_string(), code);
        Error::Redis(if lost { failure.reply_lost() } else { failure })
    }
}

/// Whether a script's error says Redis stopped it at a command it refused on this node: a key
/// of a slot in migration, or the cluster down (`Script attempted to access a non local key
/// in a cluster node`, `… while the cluster is down`). What the script wrote before stands.
fn script_stopped_part_way(text: &str) -> bool {
    text.contains("Script attempted to access a non local key")
        || text.contains("Script attempted to execute a command while the cluster is down")
        || text.contains("Script attempted to execute a write command while the cluster is down")
}

/// Whether a Redis error carries the server code `code` (`NOGROUP`, `BUSYGROUP`, …).
pub(super) fn is_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
}

/// At most 200 characters of a server's error text.
pub(super) fn bounded(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Whether Redis refused with "out of memory": `-OOM command not allowed when used memory >
/// 'maxmemory'`, or (Redis 8, which checks memory for a transaction at EXEC) `-EXECABORT
/// Transaction discarded because of: OOM command not allowed …`.
pub(super) fn oom_refusal(e: &redis::ServerError) -> bool {
    e.code() == "OOM"
        || (e.code() == "EXECABORT"
            && e.details()
                .is_some_and(|d| d.contains("OOM command not allowed")))
}

/// One bounded error for the refusals of a transaction that wrote nothing (`nothing` says so):
/// [`Error::OutOfMemory`] when Redis refused for memory, else the first refusal and the count.
pub(super) fn refused(errors: &[&redis::ServerError], nothing: &str) -> Error {
    let oom = errors.iter().find(|e| oom_refusal(e));
    let first = oom.unwrap_or(&errors[0]);
    let said = bounded(
        format!("{} {}", first.code(), first.details().unwrap_or_default()).trim_end_matches('.'),
    );
    match oom {
        Some(_) => Error::OutOfMemory(format!(
            "{nothing}. Redis said: {said}. Free memory in Redis (or raise maxmemory), then run \
             it again"
        )),
        None => Error::Protocol(format!(
            "redis refused the write ({} refusals, first: {said}); {nothing}",
            errors.len()
        )),
    }
}

/// A bounded error for a pipelined write that Redis refused in part: how many of `total`
/// commands were refused and the first refusal ([`Error::OutOfMemory`] when for memory).
pub(super) fn pipeline_refused(e: redis::RedisError, total: usize) -> Error {
    let Some(errors) = e.clone().into_server_errors() else {
        return Error::from(e);
    };
    if errors.is_empty() {
        return Error::from(e);
    }
    refused_in_part(&errors, total)
}

/// [`pipeline_refused`] from the refusals themselves: `(command index, refusal)` pairs, at
/// least one.
pub(super) fn refused_in_part(errors: &[(usize, redis::ServerError)], total: usize) -> Error {
    let Some((index, first)) = errors
        .iter()
        .find(|(_, e)| oom_refusal(e))
        .or(errors.first())
    else {
        return Error::Protocol(format!("a pipelined enqueue of {total} commands failed"));
    };
    let said = bounded(
        format!("{} {}", first.code(), first.details().unwrap_or_default()).trim_end_matches('.'),
    );
    let what = format!(
        "{} of {total} commands of a pipelined enqueue were refused (first at command {index}), \
         the others were written; Redis said: {said}",
        errors.len()
    );
    if oom_refusal(first) {
        Error::OutOfMemory(what)
    } else {
        Error::Protocol(what)
    }
}

/// Whether Redis refused a command because it is over `maxmemory` (with `noeviction`, or when
/// nothing more can be evicted): `-OOM command not allowed when used memory > 'maxmemory'`.
pub(crate) fn is_oom(e: &Error) -> bool {
    match e {
        Error::OutOfMemory(_) => true,
        Error::Redis(r) => {
            r.code() == Some("OOM")
                || r.to_string()
                    .contains("command not allowed when used memory")
        }
        _ => false,
    }
}

/// Whether a call that failed with `e` may nevertheless have run in Redis: its reply was lost
/// (a response timeout, a connection reset or closed while the request may have been sent), or
/// a reply came that redrive could not read. A refusal Redis answered (out of memory, any other
/// error reply) and a connection that could not be opened are clean: nothing ran.
pub(crate) fn may_have_run(e: &Error) -> bool {
    match e {
        Error::Redis(r) => r.may_have_run(),
        Error::Protocol(_) => true,
        _ => false,
    }
}

/// Whether an error means the group or stream is gone (deleted lane, new lane).
pub(crate) fn is_missing_group(e: &Error) -> bool {
    match e {
        Error::Redis(r) => matches!(r.code(), Some("NOGROUP" | "UNBLOCKED")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> Error {
        Error::from(redis::RedisError::from(std::io::Error::from(kind)))
    }

    #[test]
    fn a_lost_reply_may_have_run_a_refusal_did_not() {
        // No reply: the request may have run.
        assert!(may_have_run(&io(std::io::ErrorKind::TimedOut)));
        assert!(may_have_run(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(may_have_run(&io(std::io::ErrorKind::BrokenPipe)));
        // A reply redrive could not read: it ran.
        assert!(may_have_run(&Error::Protocol(
            "retry script answered 1 times".into()
        )));
        // Never sent, or refused by Redis: it did not.
        assert!(!may_have_run(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(!may_have_run(&Error::OutOfMemory("nothing written".into())));
        let oom = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "OOM",
            "command not allowed when used memory > 'maxmemory'".to_owned(),
        ));
        assert!(!may_have_run(&Error::from(oom)));
        // Cluster redirections past the client's retries: nothing ran.
        for code in ["MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"] {
            let e = redis::RedisError::from((
                redis::ErrorKind::Extension,
                code,
                "3999 127.0.0.1:7001".to_owned(),
            ));
            assert!(!may_have_run(&Error::from(e)), "{code}");
        }
        // A script stopped part-way at a key of a migrating slot: what it wrote before stands.
        let e = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "ERR",
            "Error in script: Script attempted to access a non local key in a cluster node \
             script: f_1 on @user_script:12."
                .to_owned(),
        ));
        assert!(may_have_run(&Error::from(e)));
    }
}
