//! Parsing of stream replies straight from [`redis::Value`], so that a malformed entry becomes a
//! value the fleet can dead-letter instead of a parse error that stalls a whole batch.

use redis::Value;

use crate::error::{Error, Result};

/// The field/value pairs of an entry, as raw bytes.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One stream entry as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry id, `ms-seq`.
    pub id: String,
    /// The fields, or `None` for a tombstone: an id still pending whose entry was deleted.
    pub fields: Option<Fields>,
}

fn text(v: Value) -> Result<String> {
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
        let id = text(parts.next().unwrap_or(Value::Nil))?;
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
                let key = text(pair.next().unwrap_or(Value::Nil))?;
                Ok((key, entries(pair.next().unwrap_or(Value::Nil))?))
            })
            .collect(),
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((text(k)?, entries(v)?)))
            .collect(),
        other => Err(Error::Protocol(format!(
            "expected a stream reply, got {other:?}"
        ))),
    }
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
}
