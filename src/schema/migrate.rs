//! Payload schema migrations applied when a dead letter is replayed: a task dead-lettered under
//! an older `schema_version` of its kind is brought up to date before it runs again. Pure.
//!
//! Migrations are registered per kind and source version, either in code
//! ([`Migrations::register`], for agent code that builds its own fleet) or declaratively in the
//! config (`[[admin.migrations]]`: renames, removals and a merge patch). They chain: a task at
//! version 1 with migrations 1→2 and 2→3 registered arrives at version 3. A task without a
//! `schema_version` is never migrated (its version is unknown).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::patch::merge_patch;

/// The most migrations one replay applies in a chain (a guard against mistakes).
const MAX_CHAIN: usize = 64;

/// A migration step as written in the config (`[[admin.migrations]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MigrationSpec {
    /// The kind whose payloads it migrates.
    pub kind: String,
    /// The schema version it migrates from.
    pub from: u32,
    /// The schema version it produces (greater than `from`).
    pub to: u32,
    /// Top-level payload fields to rename, old name → new name (applied first).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Top-level payload fields to remove (applied second).
    #[serde(default)]
    pub remove: Vec<String>,
    /// A JSON merge patch applied last (TOML has no null, so removals go in `remove`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
}

type MigrateFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

#[derive(Clone)]
struct Step {
    to: u32,
    apply: Arc<MigrateFn>,
}

/// The registered migrations, by kind and source version.
#[derive(Clone, Default)]
pub struct Migrations {
    by_kind: HashMap<String, BTreeMap<u32, Step>>,
}

impl fmt::Debug for Migrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut steps: Vec<String> = self
            .by_kind
            .iter()
            .flat_map(|(k, m)| {
                m.iter()
                    .map(move |(from, s)| format!("{k}:{from}->{}", s.to))
            })
            .collect();
        steps.sort();
        f.debug_struct("Migrations").field("steps", &steps).finish()
    }
}

/// What [`Migrations::migrate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Migrated {
    /// The payload after every applicable step.
    pub payload: Value,
    /// The schema version after them.
    pub schema_version: Option<u32>,
    /// The steps applied, as (from, to).
    pub steps: Vec<(u32, u32)>,
}

impl Migrations {
    /// No migrations.
    pub fn new() -> Migrations {
        Migrations::default()
    }

    /// Registers a migration of `kind` payloads from version `from` to `to`.
    pub fn register<F>(&mut self, kind: &str, from: u32, to: u32, f: F) -> Result<(), String>
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        crate::task::validate_kind(kind)?;
        if to <= from {
            return Err(format!(
                "migration of kind '{kind}' from {from} to {to}: 'to' must be greater than 'from'"
            ));
        }
        let steps = self.by_kind.entry(kind.to_owned()).or_default();
        if steps.contains_key(&from) {
            return Err(format!(
                "kind '{kind}' has two migrations from schema version {from}"
            ));
        }
        steps.insert(
            from,
            Step {
                to,
                apply: Arc::new(f),
            },
        );
        Ok(())
    }

    /// Builds the registry from config specs.
    pub fn from_specs(specs: &[MigrationSpec]) -> Result<Migrations, String> {
        let mut m = Migrations::new();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(p) = &spec.patch {
                if !p.is_object() {
                    return Err(format!(
                        "admin.migrations[{i}].patch must be a table (a JSON merge patch object)"
                    ));
                }
            }
            let s = spec.clone();
            m.register(&spec.kind, spec.from, spec.to, move |payload| {
                apply_spec(&s, payload)
            })
            .map_err(|e| format!("admin.migrations[{i}]: {e}"))?;
        }
        Ok(m)
    }

    /// Applies every step registered for `kind` starting at `version`, in a chain.
    pub fn migrate(
        &self,
        kind: &str,
        version: Option<u32>,
        mut payload: Value,
    ) -> Result<Migrated, String> {
        let mut steps = Vec::new();
        let (Some(mut v), Some(chain)) = (version, self.by_kind.get(kind)) else {
            return Ok(Migrated {
                payload,
                schema_version: version,
                steps,
            });
        };
        while let Some(step) = chain.get(&v) {
            if steps.len() >= MAX_CHAIN {
                return Err(format!(
                    "kind '{kind}': more than {MAX_CHAIN} migrations in a chain"
                ));
            }
            payload = (step.apply)(payload).map_err(|e| {
                format!(
                    "migration of kind '{kind}' from schema version {v} to {} failed: {e}",
                    step.to
                )
            })?;
            steps.push((v, step.to));
            v = step.to;
        }
        Ok(Migrated {
            payload,
            schema_version: Some(v),
            steps,
        })
    }
}

fn apply_spec(spec: &MigrationSpec, mut payload: Value) -> Result<Value, String> {
    let Value::Object(obj) = &mut payload else {
        return Err("the payload is not a JSON object".into());
    };
    for (old, new) in &spec.rename {
        if let Some(v) = obj.remove(old) {
            obj.insert(new.clone(), v);
        }
    }
    for name in &spec.remove {
        obj.remove(name);
    }
    if let Some(p) = &spec.patch {
        merge_patch(&mut payload, p);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(from: u32, to: u32) -> MigrationSpec {
        MigrationSpec {
            kind: "triage".into(),
            from,
            to,
            rename: BTreeMap::new(),
            remove: Vec::new(),
            patch: None,
        }
    }

    #[test]
    fn chains_apply_in_order_from_the_task_version() {
        let mut one = spec(1, 2);
        one.rename.insert("ticket".into(), "ticket_id".into());
        let mut two = spec(2, 3);
        two.remove.push("legacy".into());
        two.patch = Some(json!({"lang": "en"}));
        let m = Migrations::from_specs(&[two, one]).unwrap();
        let out = m
            .migrate("triage", Some(1), json!({"ticket": 7, "legacy": true}))
            .unwrap();
        assert_eq!(out.payload, json!({"ticket_id": 7, "lang": "en"}));
        assert_eq!(out.schema_version, Some(3));
        assert_eq!(out.steps, vec![(1, 2), (2, 3)]);
        let from2 = m.migrate("triage", Some(2), json!({"ticket": 7})).unwrap();
        assert_eq!(from2.payload, json!({"ticket": 7, "lang": "en"}));
        let current = m.migrate("triage", Some(3), json!({"x": 1})).unwrap();
        assert!(current.steps.is_empty());
        let unversioned = m.migrate("triage", None, json!({"ticket": 1})).unwrap();
        assert_eq!(unversioned.schema_version, None);
        let other = m.migrate("score", Some(1), json!({"ticket": 1})).unwrap();
        assert!(other.steps.is_empty());
    }

    #[test]
    fn bad_registrations_and_failing_steps_are_explained() {
        assert!(Migrations::from_specs(&[spec(2, 2)])
            .unwrap_err()
            .contains("must be greater"));
        assert!(Migrations::from_specs(&[spec(1, 2), spec(1, 3)])
            .unwrap_err()
            .contains("two migrations from schema version 1"));
        let mut bad_patch = spec(1, 2);
        bad_patch.patch = Some(json!([1]));
        assert!(Migrations::from_specs(&[bad_patch])
            .unwrap_err()
            .contains("admin.migrations[0].patch"));
        let mut m = Migrations::new();
        m.register("k", 1, 2, |_| Err("no".into())).unwrap();
        let err = m.migrate("k", Some(1), json!({})).unwrap_err();
        assert!(
            err.contains("from schema version 1 to 2 failed: no"),
            "{err}"
        );
        let m = Migrations::from_specs(&[spec(1, 2)]).unwrap();
        assert!(m
            .migrate("triage", Some(1), json!([1]))
            .unwrap_err()
            .contains("not a JSON object"));
    }
}
