//! The dead-letter archive: where dead letters go when they leave Redis without being handled
//! (past the cap or the retention) and where resolved and discarded ones go after a grace
//! period, so that no dead letter's content is ever lost by redrive itself.
//!
//! The archiver (src/fleet/archiver.rs) moves a batch at a time: it records the batch in Redis,
//! writes one gzip-compressed JSON Lines object and its manifest, looks at the object to confirm
//! it, and only then removes exactly those entries from Redis in one script. This module is the
//! storage side of that, and never touches Redis.
//!
//! # Layout
//!
//! * [`settings`] — where the archive is ([`Location`]: a directory or an S3-compatible bucket)
//!   and when dead letters leave Redis ([`Retention`]).
//! * [`format`] — pure: entries as JSON Lines, gzip, manifests, object names and the layout
//!   `<prefix>/<tenant>/<yyyy>/<mm>/<dd>/<class>/<first>_<last>.jsonl.gz`.
//! * [`crypt`] — AES-256-GCM of the archived fields with the configured key.
//! * [`store`] — the storage itself through `object_store` (local directory or S3).
//! * [`read`] — finding archived dead letters again: listing, one by id.

pub(crate) mod crypt;
pub(crate) mod format;
pub(crate) mod read;
pub(crate) mod settings;
pub(crate) mod store;

pub use crypt::ArchiveKey;
pub use format::ArchiveClass;
pub use settings::{ArchiveSettings, Location, Retention, S3Location, Secret};
pub use store::ArchiveStore;
