//! What the archive holds, pure: archived dead letters as JSON Lines, gzip, the manifest of a
//! batch, and where a batch's objects are named.
//!
//! Layout: `<prefix>/<tenant>/<yyyy>/<mm>/<dd>/<class>/<first>_<last>.jsonl.gz` and, beside it,
//! `<first>_<last>.manifest.json`. The day is when the batch was begun (the archiver's clock,
//! kept in Redis with the batch, so a retried upload lands on the same day); `class` is why the
//! entries left Redis (`dead_letter`: past the cap or the retention; `resolved`, `discarded`:
//! removed by an operator, after the grace period); `first` and `last` are the ids of the
//! batch's first and last entry in the stream they left. A batch's name is therefore fixed by
//! its entries: a retried upload overwrites the same two objects, never adds a third.
//!
//! One line per entry:
//! `{"v":1,"tenant":…,"id":…,"source_id":…,"class":…,"task_id":…,"kind":…,"failure_class":…,
//! "fields":[[name,value],…]}` — `id` is the dead-letter id (what `dlq list` showed and task
//! records name), `source_id` its id in the stream it left (the same for `dead_letter`), the
//! fields in stream order, each name and value a string when it is UTF-8 text and
//! `{"base64":"…"}` when it is not, so every byte comes back. With a key, `fields` is replaced
//! by `"enc":"<base64 of nonce ‖ AES-256-GCM ciphertext of the fields' JSON>"` and `"key":"<key
//! id>"`; ids, task id, kind and failure class stay readable for `archive list`.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypt::ArchiveKey;
use crate::deadletter::{base64_decode, base64_encode, RAW_BASE64_VALUE};

/// The format version written in every line and manifest.
pub const VERSION: u32 = 1;
/// The most a decompressed object may grow to when read back (a guard against a corrupt or
/// hostile object): 1 GiB.
const MAX_INFLATED: u64 = 1 << 30;

/// Why entries left Redis: the class directory of their batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveClass {
    /// Dead letters past the cap or the retention.
    DeadLetter,
    /// Dead letters an operator resolved.
    Resolved,
    /// Dead letters an operator discarded.
    Discarded,
}

impl ArchiveClass {
    /// Every class.
    pub const ALL: [ArchiveClass; 3] = [
        ArchiveClass::DeadLetter,
        ArchiveClass::Resolved,
        ArchiveClass::Discarded,
    ];

    /// The wire name (directory, metrics label, record field).
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveClass::DeadLetter => "dead_letter",
            ArchiveClass::Resolved => "resolved",
            ArchiveClass::Discarded => "discarded",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<ArchiveClass> {
        ArchiveClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The class of a removed dead letter by its `removed_action` (`resolved`, `discarded`).
    pub fn of_removal(action: &str) -> Option<ArchiveClass> {
        match action {
            "resolved" => Some(ArchiveClass::Resolved),
            "discarded" => Some(ArchiveClass::Discarded),
            _ => None,
        }
    }
}

/// An entry's fields, exactly as they were in its stream.
pub type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// One archived dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEntry {
    /// Its tenant.
    pub tenant: String,
    /// Its dead-letter id.
    pub id: String,
    /// Its id in the stream it left (the removed ones' stream for resolved / discarded).
    pub source_id: String,
    /// Why it left.
    pub class: ArchiveClass,
    /// Its fields, byte for byte.
    pub fields: RawFields,
}

impl ArchivedEntry {
    /// The text of a field, when present and UTF-8 (the last one of a repeated name).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// What a manifest and `archive list` show of it.
    pub fn summary(&self) -> EntrySummary {
        EntrySummary {
            id: self.id.clone(),
            source_id: self.source_id.clone(),
            task_id: self.field("task_id").unwrap_or("").to_owned(),
            kind: self.field("kind").unwrap_or("").to_owned(),
            failure_class: self.field("class").unwrap_or("").to_owned(),
        }
    }

    /// The associated data its encrypted fields are bound to.
    fn aad(tenant: &str, id: &str) -> Vec<u8> {
        format!("redrive-archive/{tenant}/{id}").into_bytes()
    }
}

/// An archived entry without its fields: ids, task id, kind, failure class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySummary {
    /// The dead-letter id.
    pub id: String,
    /// Its id in the stream it left.
    pub source_id: String,
    /// Its task id (`""` without one).
    #[serde(default)]
    pub task_id: String,
    /// Its kind (`""` without one).
    #[serde(default)]
    pub kind: String,
    /// Its failure class.
    #[serde(default)]
    pub failure_class: String,
}

/// The manifest written beside a batch's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`VERSION`].
    pub v: u32,
    /// The tenant.
    pub tenant: String,
    /// Why its entries left Redis.
    pub class: ArchiveClass,
    /// The data object's path (under the archive's root).
    pub object: String,
    /// When the batch was begun (ms, the archiver's clock).
    pub begun_at_ms: u64,
    /// Entries in the object.
    pub count: usize,
    /// The object's size in bytes (compressed).
    pub bytes: u64,
    /// The object's SHA-256, hex.
    pub sha256: String,
    /// The id of the key its fields are encrypted with; `None`: not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The entries, in the object's order.
    pub entries: Vec<EntrySummary>,
}

/// Where a batch goes: its day, class and the ids of its first and last source entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchName {
    /// The tenant.
    pub tenant: String,
    /// When the batch was begun, ms since the epoch.
    pub begun_at_ms: u64,
    /// Why its entries left.
    pub class: ArchiveClass,
    /// The first entry's source id.
    pub first: String,
    /// The last entry's source id.
    pub last: String,
}

impl BatchName {
    /// The directory of the batch, relative to the archive's root.
    pub fn dir(&self) -> String {
        let (y, m, d) = civil_day(self.begun_at_ms);
        format!(
            "{}/{y:04}/{m:02}/{d:02}/{}",
            self.tenant,
            self.class.as_str()
        )
    }

    /// The data object's path.
    pub fn object(&self) -> String {
        format!("{}/{}_{}.jsonl.gz", self.dir(), self.first, self.last)
    }

    /// The manifest's path.
    #[cfg(test)]
    pub fn manifest(&self) -> String {
        manifest_of(&self.object())
    }
}

/// The manifest path of a data object's path.
pub fn manifest_of(object: &str) -> String {
    format!(
        "{}.manifest.json",
        object.strip_suffix(".jsonl.gz").unwrap_or(object)
    )
}

/// What a path under the archive's root names, read from the path alone: a batch's data object
/// or manifest, with its tenant, day (`yyyy-mm-dd`), class and source id range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The tenant.
    pub tenant: String,
    /// The day, `yyyy-mm-dd`.
    pub day: String,
    /// The class.
    pub class: ArchiveClass,
    /// The first source id.
    pub first: String,
    /// The last source id.
    pub last: String,
    /// A manifest (else the data object).
    pub manifest: bool,
}

impl PathInfo {
    /// Reads `tenant/yyyy/mm/dd/class/first_last.(jsonl.gz|manifest.json)`; `None` for any
    /// other path (files the archive did not write).
    pub fn parse(path: &str) -> Option<PathInfo> {
        let parts: Vec<&str> = path.split('/').collect();
        let [tenant, y, m, d, class, file] = parts.as_slice() else {
            return None;
        };
        let (stem, manifest) = if let Some(s) = file.strip_suffix(".manifest.json") {
            (s, true)
        } else {
            (file.strip_suffix(".jsonl.gz")?, false)
        };
        let (first, last) = stem.split_once('_')?;
        if !is_stream_id(first) || !is_stream_id(last) {
            return None;
        }
        Some(PathInfo {
            tenant: (*tenant).to_owned(),
            day: format!("{y}-{m}-{d}"),
            class: ArchiveClass::parse(class)?,
            first: first.to_owned(),
            last: last.to_owned(),
            manifest,
        })
    }

    /// Whether the source id range of the batch holds `id` (compared as stream ids).
    pub fn covers(&self, id: &str) -> bool {
        match (parse_id(&self.first), parse_id(&self.last), parse_id(id)) {
            (Some(a), Some(b), Some(x)) => a <= x && x <= b,
            _ => false,
        }
    }
}

/// A stream id `ms-seq` as numbers.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn is_stream_id(s: &str) -> bool {
    parse_id(s).is_some()
}

/// The UTC calendar day of `ms` since the epoch: (year, month, day), after H. Hinnant.
pub fn civil_day(ms: u64) -> (i64, i64, i64) {
    let days = (ms / 1000) as i64 / 86_400;
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// `yyyy-mm-dd` of `ms`.
pub fn day_text(ms: u64) -> String {
    let (y, m, d) = civil_day(ms);
    format!("{y:04}-{m:02}-{d:02}")
}

fn text_or_base64(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => serde_json::json!({ RAW_BASE64_VALUE: base64_encode(bytes) }),
    }
}

fn bytes_of(v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) => o
            .get(RAW_BASE64_VALUE)
            .and_then(Value::as_str)
            .and_then(base64_decode)
            .ok_or_else(|| "a field is neither text nor {\"base64\": …}".to_owned()),
        _ => Err("a field is neither text nor {\"base64\": …}".into()),
    }
}

fn fields_json(fields: &RawFields) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|(k, v)| Value::Array(vec![text_or_base64(k), text_or_base64(v)]))
            .collect(),
    )
}

fn fields_from_json(v: &Value) -> Result<RawFields, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| "'fields' is not an array".to_owned())?;
    arr.iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([k, v]) => Ok((bytes_of(k)?, bytes_of(v)?)),
            _ => Err("a field is not a [name, value] pair".to_owned()),
        })
        .collect()
}

/// One entry as its line (without the newline), its fields sealed with `key` when given.
pub fn encode_line(e: &ArchivedEntry, key: Option<&ArchiveKey>) -> Result<String, String> {
    let s = e.summary();
    let mut line = serde_json::json!({
        "v": VERSION,
        "tenant": e.tenant,
        "id": e.id,
        "source_id": e.source_id,
        "class": e.class.as_str(),
        "task_id": s.task_id,
        "kind": s.kind,
        "failure_class": s.failure_class,
    });
    let fields = fields_json(&e.fields);
    match key {
        None => line["fields"] = fields,
        Some(k) => {
            let plain = serde_json::to_vec(&fields).map_err(|e| e.to_string())?;
            let sealed = k.seal(&plain, &ArchivedEntry::aad(&e.tenant, &e.id))?;
            line["enc"] = Value::String(base64_encode(&sealed));
            line["key"] = Value::String(k.id().to_owned());
        }
    }
    serde_json::to_string(&line).map_err(|e| e.to_string())
}

/// Reads one line back, opening sealed fields with `key`. A sealed line without a key, or
/// with another key, is an error that says which key it needs.
pub fn decode_line(line: &str, key: Option<&ArchiveKey>) -> Result<ArchivedEntry, String> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| format!("an archive line is not JSON: {e}"))?;
    let text = |name: &str| -> Result<String, String> {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("an archive line has no '{name}'"))
    };
    let tenant = text("tenant")?;
    let id = text("id")?;
    let class = ArchiveClass::parse(&text("class")?)
        .ok_or_else(|| "an archive line has an unknown class".to_owned())?;
    let fields = match (v.get("fields"), v.get("enc").and_then(Value::as_str)) {
        (Some(f), _) => fields_from_json(f)?,
        (None, Some(enc)) => {
            let needs = v.get("key").and_then(Value::as_str).unwrap_or("?");
            let Some(k) = key else {
                return Err(format!(
                    "dead letter {tenant}/{id} is encrypted (key {needs}): set \
                     archive.encryption_key_file or archive.encryption_key_env"
                ));
            };
            if k.id() != needs {
                return Err(format!(
                    "dead letter {tenant}/{id} was encrypted with key {needs}, the configured \
                     key is {}",
                    k.id()
                ));
            }
            let sealed = base64_decode(enc)
                .ok_or_else(|| format!("dead letter {tenant}/{id}: 'enc' is not base64"))?;
            let plain = k.open(&sealed, &ArchivedEntry::aad(&tenant, &id))?;
            let fv: Value = serde_json::from_slice(&plain)
                .map_err(|e| format!("dead letter {tenant}/{id}: decrypted fields: {e}"))?;
            fields_from_json(&fv)?
        }
        (None, None) => return Err(format!("dead letter {tenant}/{id} has no fields")),
    };
    Ok(ArchivedEntry {
        source_id: text("source_id").unwrap_or_else(|_| id.clone()),
        tenant,
        id,
        class,
        fields,
    })
}

/// A batch as its gzip-compressed JSON Lines object.
pub fn encode_object(
    entries: &[ArchivedEntry],
    key: Option<&ArchiveKey>,
) -> Result<Vec<u8>, String> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for e in entries {
        let line = encode_line(e, key)?;
        gz.write_all(line.as_bytes())
            .and_then(|_| gz.write_all(b"\n"))
            .map_err(|e| format!("compressing: {e}"))?;
    }
    gz.finish().map_err(|e| format!("compressing: {e}"))
}

/// The lines of a gzip-compressed JSON Lines object.
pub fn object_lines(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_INFLATED)
        .read_to_string(&mut text)
        .map_err(|e| format!("the object is not gzip-compressed UTF-8 text: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

/// Every entry of an object, opened with `key`.
pub fn decode_object(bytes: &[u8], key: Option<&ArchiveKey>) -> Result<Vec<ArchivedEntry>, String> {
    object_lines(bytes)?
        .iter()
        .map(|l| decode_line(l, key))
        .collect()
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest of a batch whose object is `object` (its bytes).
pub fn manifest(
    name: &BatchName,
    entries: &[ArchivedEntry],
    object: &[u8],
    key: Option<&ArchiveKey>,
) -> Manifest {
    Manifest {
        v: VERSION,
        tenant: name.tenant.clone(),
        class: name.class,
        object: name.object(),
        begun_at_ms: name.begun_at_ms,
        count: entries.len(),
        bytes: object.len() as u64,
        sha256: sha256_hex(object),
        key: key.map(|k| k.id().to_owned()),
        entries: entries.iter().map(ArchivedEntry::summary).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, payload: &[u8]) -> ArchivedEntry {
        ArchivedEntry {
            tenant: "acme".into(),
            id: id.into(),
            source_id: id.into(),
            class: ArchiveClass::DeadLetter,
            fields: vec![
                (b"task_id".to_vec(), b"t-1".to_vec()),
                (b"kind".to_vec(), b"triage".to_vec()),
                (b"payload".to_vec(), payload.to_vec()),
                (b"class".to_vec(), b"llm_error".to_vec()),
                (b"payload".to_vec(), b"repeated".to_vec()),
            ],
        }
    }

    #[test]
    fn objects_round_trip_byte_for_byte_with_and_without_a_key() {
        let entries = vec![
            entry(
                "1700000000000-0",
                br#"{"n": 1.50, "s": "caf\u00e9 \u2603"}"#,
            ),
            entry("1700000000001-3", b"\xff\xfe not utf-8 \x00"),
        ];
        let key = ArchiveKey::from_bytes([9; 32]);
        for k in [None, Some(&key)] {
            let bytes = encode_object(&entries, k).unwrap();
            assert_eq!(decode_object(&bytes, k).unwrap(), entries);
            // Same entries, same key: lines differ only by nonce; without a key, identical.
            if k.is_none() {
                assert_eq!(encode_object(&entries, None).unwrap(), bytes);
            }
        }
        let sealed = encode_object(&entries, Some(&key)).unwrap();
        let text = object_lines(&sealed).unwrap().join("\n");
        assert!(
            !text.contains("1.50") && text.contains("\"task_id\":\"t-1\""),
            "{text}"
        );
        let err = decode_object(&sealed, None).unwrap_err();
        assert!(
            err.contains(key.id()) && err.contains("encryption_key"),
            "{err}"
        );
        let other = ArchiveKey::from_bytes([1; 32]);
        assert!(decode_object(&sealed, Some(&other)).is_err());
    }

    #[test]
    fn names_are_fixed_by_the_batch_and_read_back_from_paths() {
        let n = BatchName {
            tenant: "acme".into(),
            begun_at_ms: 1_709_251_199_000, // 2024-02-29T23:59:59Z
            class: ArchiveClass::Resolved,
            first: "1700-0".into(),
            last: "1800-2".into(),
        };
        assert_eq!(
            n.object(),
            "acme/2024/02/29/resolved/1700-0_1800-2.jsonl.gz"
        );
        assert_eq!(
            n.manifest(),
            "acme/2024/02/29/resolved/1700-0_1800-2.manifest.json"
        );
        let info = PathInfo::parse(&n.object()).unwrap();
        assert_eq!(
            (info.day.as_str(), info.class, info.manifest),
            ("2024-02-29", ArchiveClass::Resolved, false)
        );
        assert!(PathInfo::parse(&n.manifest()).unwrap().manifest);
        assert!(info.covers("1700-0") && info.covers("1750-9") && info.covers("1800-2"));
        assert!(!info.covers("1800-3") && !info.covers("999-0") && !info.covers("x"));
        assert!(PathInfo::parse("acme/2024/02/29/resolved/notes.txt").is_none());
        assert!(PathInfo::parse("acme/2024/02/29/other/1-0_2-0.jsonl.gz").is_none());
        assert_eq!(day_text(0), "1970-01-01");
        assert_eq!(civil_day(951_782_400_000), (2000, 2, 29));
    }

    #[test]
    fn manifests_list_the_entries_without_their_fields() {
        let entries = vec![entry("5-0", b"{}")];
        let n = BatchName {
            tenant: "acme".into(),
            begun_at_ms: 0,
            class: ArchiveClass::DeadLetter,
            first: "5-0".into(),
            last: "5-0".into(),
        };
        let obj = encode_object(&entries, None).unwrap();
        let m = manifest(&n, &entries, &obj, None);
        assert_eq!((m.count, m.bytes), (1, obj.len() as u64));
        assert_eq!(m.entries[0].task_id, "t-1");
        assert_eq!(m.entries[0].failure_class, "llm_error");
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("payload"), "{json}");
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    }
}
