//! The masters of a Redis Cluster and the slots each serves, read from a `CLUSTER SLOTS`
//! reply: what the pipelines of `conn.rs` are grouped by and what `topology.rs` addresses
//! nodes with. A leaf: it knows replies, not connections.

use redis::Value;

use crate::error::{Error, Result};

/// One master of a cluster and the slot ranges it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    /// The host the cluster announces for it.
    pub(crate) host: String,
    /// Its port.
    pub(crate) port: u16,
    /// Inclusive slot ranges.
    pub(crate) slots: Vec<(u16, u16)>,
}

/// The masters of a `CLUSTER SLOTS` reply, each with its ranges, in the order first seen.
/// Entries of another shape are skipped; a reply that is not an array is an error.
pub(crate) fn parse_slots(v: Value) -> Result<Vec<Shard>> {
    let Value::Array(ranges) = v else {
        return Err(Error::Protocol(format!(
            "CLUSTER SLOTS answered {v:?}, not an array"
        )));
    };
    let mut shards: Vec<Shard> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(a), Some(b)) = (int(parts.first()), int(parts.get(1))) else {
            continue;
        };
        let Some(Value::Array(master)) = parts.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => continue,
        };
        let Some(port) = int(master.get(1)) else {
            continue;
        };
        match shards.iter_mut().find(|s| s.host == host && s.port == port) {
            Some(s) => s.slots.push((a, b)),
            None => shards.push(Shard {
                host,
                port,
                slots: vec![(a, b)],
            }),
        }
    }
    Ok(shards)
}
