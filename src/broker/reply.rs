//! The one set of reply parsers, straight from [`redis::Value`]: stream entries (so that a
//! malformed entry becomes a value the fleet can dead-letter instead of a parse error that
//! stalls a whole batch) and the parts of script replies. A reader's XREADGROUP on its own
//! connection is parsed from the bytes into the same [`Entry`] by `stream_read.rs`, with the
//! same leniency (a tombstone is `None`, a field's value is bytes).
//!
//! Every parser takes the value it reads by value. Strict ones take `what` (the script or
//! command that answered, for the error) and return a [`Result`]; the lenient `*_or_*` ones
//! read a missing or odd part as empty or zero, where a script's reply may leave it out.

use std::collections::HashMap;

use redis::Value;

use crate::error::{Error, Result};

pub use crate::task::Fields;

/// One stream entry as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry id, `ms-seq`.
    pub id: String,
    /// The fields, or `None` for a tombstone: an id still pending whose entry was deleted.
    pub fields: Option<Fields>,
}

/// A stream key or entry id: UTF-8 or an error.
fn stream_text(v: Value) -> Result<String> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|_| Error::Protocol("non-UTF-8 stream key or id".into()))
        }
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Protocol(format!("expected a string, got {other:?}"))),
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Double(d) => d.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn fields(v: Value) -> Result<Option<Fields>> {
    match v {
        Value::Nil => Ok(None),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let Some(k) = it.next() {
                let v = it.next().unwrap_or(Value::Nil);
                out.push((bytes(k), bytes(v)));
            }
            Ok(Some(out))
        }
        Value::Map(pairs) => Ok(Some(
            pairs
                .into_iter()
                .map(|(k, v)| (bytes(k), bytes(v)))
                .collect(),
        )),
        other => Err(Error::Protocol(format!(
            "expected entry fields, got {other:?}"
        ))),
    }
}

/// Parses the entry list of XRANGE, or of one stream in an XREAD/XREADGROUP reply.
pub fn entries(v: Value) -> Result<Vec<Entry>> {
    let items = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(Error::Protocol(format!(
                "expected a list of entries, got {other:?}"
            )))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(Error::Protocol("expected an [id, fields] pair".into()));
        };
        let mut parts = parts.into_iter();
        let id = stream_text(parts.next().unwrap_or(Value::Nil))?;
        let fields = fields(parts.next().unwrap_or(Value::Nil))?;
        out.push(Entry { id, fields });
    }
    Ok(out)
}

/// Parses an XREADGROUP reply (RESP2 array or RESP3 map) into `(stream key, entries)` pairs.
/// A nil reply (BLOCK timed out) is an empty list.
pub fn streams(v: Value) -> Result<Vec<(String, Vec<Entry>)>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                let Value::Array(pair) = item else {
                    return Err(Error::Protocol("expected a [key, entries] pair".into()));
                };
                let mut pair = pair.into_iter();
                let key = stream_text(pair.next().unwrap_or(Value::Nil))?;
                Ok((key, entries(pair.next().unwrap_or(Value::Nil))?))
            })
            .collect(),
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((stream_text(k)?, entries(v)?)))
            .collect(),
        other => Err(Error::Protocol(format!(
            "expected a stream reply, got {other:?}"
        ))),
    }
}

/// A string part of a script's reply (lossy UTF-8; a number as its digits).
pub(crate) fn text(v: Value, what: &str) -> Result<String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Protocol(format!(
            "{what} returned {other:?} where a string belongs"
        ))),
    }
}

/// A number part of a script's reply (an integer, or a string of digits).
pub(crate) fn int(v: Value, what: &str) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(i),
        Value::BulkString(b) => String::from_utf8_lossy(&b)
            .parse()
            .map_err(|_| Error::Protocol(format!("{what} returned a non-number"))),
        other => Err(Error::Protocol(format!(
            "{what} returned {other:?} where a number belongs"
        ))),
    }
}

/// [`text`], with anything that is not a string or number read as empty.
pub(crate) fn text_or_empty(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::SimpleString(s) => s,
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// A count: an integer (negative read as 0) or a string of digits; anything else is 0.
pub(crate) fn int_or_zero(v: Value) -> u64 {
    match v {
        Value::Int(i) => i.max(0) as u64,
        other => text_or_empty(other).parse().unwrap_or(0),
    }
}

/// The parts of an array reply. With `len`, the array must have at least that many parts;
/// without, a nil reply is an empty array.
pub(crate) fn array(v: Value, what: &str, len: Option<usize>) -> Result<Vec<Value>> {
    match (v, len) {
        (Value::Array(items), Some(n)) if items.len() >= n => Ok(items),
        (Value::Array(items), None) => Ok(items),
        (Value::Nil, None) => Ok(Vec::new()),
        (other, _) => Err(Error::Protocol(format!("{what} returned {other:?}"))),
    }
}

/// A flat `[name, count, …]` array as pairs (lenient parts).
pub(crate) fn pairs(v: Value, what: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut it = array(v, what, None)?.into_iter();
    while let (Some(k), Some(n)) = (it.next(), it.next()) {
        out.push((text_or_empty(k), int_or_zero(n)));
    }
    Ok(out)
}

/// An HGETALL reply (RESP2 flat array or RESP3 map); `None` when empty (no such key).
pub(crate) fn hash(v: Value) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    match v {
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.insert(text_or_empty(k), text_or_empty(v));
            }
        }
        Value::Map(items) => {
            for (k, v) in items {
                out.insert(text_or_empty(k), text_or_empty(v));
            }
        }
        _ => {}
    }
    (!out.is_empty()).then_some(out)
}

/// A flat `[id, count, …]` array of a claim script as pairs; a missing part is an empty list.
pub(crate) fn id_counts(v: Option<Value>) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    if let Some(Value::Array(flat)) = v {
        let mut it = flat.into_iter();
        while let (Some(id), Some(n)) = (it.next(), it.next()) {
            let id: String = redis::from_redis_value(id).map_err(redis::RedisError::from)?;
            let n: u64 = redis::from_redis_value(n).map_err(redis::RedisError::from)?;
            out.push((id, n));
        }
    }
    Ok(out)
}

/// The entry ids of an XREADGROUP reply over one stream (RESP2: [[key, [[id, fields]…]]]),
/// without their fields: the bench's raw loop, which must parse as little as it can.
#[cfg(feature = "app")]
pub(crate) fn entry_ids(v: Value) -> Result<Vec<Vec<u8>>> {
    let bad = || Error::Protocol("raw loop: unexpected XREADGROUP reply".into());
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        _ => return Err(bad()),
    };
    let mut ids = Vec::new();
    for s in streams {
        let Value::Array(mut pair) = s else {
            return Err(bad());
        };
        let Some(Value::Array(entries)) = pair.pop() else {
            return Err(bad());
        };
        for e in entries {
            let Value::Array(mut idf) = e else {
                return Err(bad());
            };
            if idf.is_empty() {
                return Err(bad());
            }
            match idf.swap_remove(0) {
                Value::BulkString(id) => ids.push(id),
                _ => return Err(bad()),
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries_and_tombstones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("lane"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("kind"), bulk("k")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let parsed = streams(reply).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "lane");
        assert_eq!(
            parsed[0].1[0].fields,
            Some(vec![(b"kind".to_vec(), b"k".to_vec())])
        );
        assert_eq!(parsed[0].1[1].fields, None);
        assert!(streams(Value::Nil).unwrap().is_empty());
        assert!(streams(Value::Int(3)).is_err());
    }

    #[test]
    fn strict_parts_name_the_script_and_lenient_ones_default() {
        assert_eq!(text(bulk("open"), "x").unwrap(), "open");
        assert_eq!(text(Value::Int(3), "x").unwrap(), "3");
        let e = text(Value::Nil, "breaker script").unwrap_err().to_string();
        assert!(
            e.contains("breaker script returned nil where a string belongs"),
            "{e}"
        );
        assert_eq!(int(bulk("-4"), "x").unwrap(), -4);
        assert!(int(bulk("four"), "x").is_err());
        assert_eq!(text_or_empty(Value::Nil), "");
        assert_eq!(int_or_zero(Value::Int(-2)), 0);
        assert_eq!(int_or_zero(bulk("7")), 7);
        assert_eq!(int_or_zero(bulk("seven")), 0);
    }

    #[test]
    fn arrays_with_and_without_a_length() {
        assert!(array(Value::Nil, "x", None).unwrap().is_empty());
        assert!(array(Value::Nil, "x", Some(0)).is_err());
        let two = || Value::Array(vec![bulk("a"), Value::Int(1)]);
        assert_eq!(array(two(), "x", Some(2)).unwrap().len(), 2);
        assert!(array(two(), "x", Some(3)).is_err());
        assert_eq!(pairs(two(), "x").unwrap(), vec![("a".to_owned(), 1)]);
        assert!(pairs(Value::Int(1), "x").is_err());
        assert_eq!(hash(Value::Array(vec![])), None);
        let h = hash(Value::Map(vec![(bulk("k"), Value::Int(5))])).unwrap();
        assert_eq!(h.get("k").map(String::as_str), Some("5"));
    }
}
