//! The tenants an admin command touches (its *scope*), known whoever sent it: the executing
//! member computes it from the command it runs (its selection's tenants, its tenant, or for a
//! resume or a cancel the tenants of the replay job it names) and writes it into the command's
//! record when it begins (scripts/admin_begin.lua) and into its audit entry when it finishes —
//! so neither a sender's claim nor a reused command id can attribute a command to a tenant it
//! did not touch. A filter without tenants touches every tenant (`"*"`), whatever it matched:
//! what a command touches never depends on other tenants' data, so it cannot reveal them.
//! The HTTP API shows a tenant-scoped token only the commands whose scope lies within its
//! tenants (the API's principal).

use std::collections::{BTreeSet, HashMap};

use super::replay::job::field as job_field;
use super::select::Selection;
use super::{AdminCommand, ReplaySpec};
use crate::broker::Broker;
use crate::error::Result;

/// The tenants an admin command touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touches {
    /// Every tenant (a filter without tenants), or it cannot be told (a job record gone).
    All,
    /// These tenants.
    Tenants(BTreeSet<String>),
}

impl Touches {
    /// The form commands' records, audit entries and the API's notes keep (`"*"` or a list).
    pub fn to_json(&self) -> String {
        match self {
            Touches::All => "\"*\"".into(),
            Touches::Tenants(t) => serde_json::to_string(t).unwrap_or_else(|_| "\"*\"".into()),
        }
    }

    /// Reads [`Touches::to_json`]; anything else touches everything.
    pub fn from_json(text: &str) -> Touches {
        match serde_json::from_str::<BTreeSet<String>>(text) {
            Ok(t) if !t.is_empty() => Touches::Tenants(t),
            _ => Touches::All,
        }
    }

    /// The tenants a selection names (a filter without tenants: every tenant).
    pub fn of_selection(s: &Selection) -> Touches {
        match s {
            Selection::Ids(ids) => Touches::Tenants(ids.iter().map(|d| d.tenant.clone()).collect()),
            Selection::Filter(f) if f.tenants.is_empty() => Touches::All,
            Selection::Filter(f) => Touches::Tenants(f.tenants.iter().cloned().collect()),
        }
    }
}

/// The tenants a command touches: its selection's, its tenant's, or — for a resume or a
/// cancel — the tenants of the replay job it names (read from the job's record; a job gone
/// touches everything). `jobs` caches the job records read for one request.
pub async fn touches(
    broker: &Broker,
    command: &AdminCommand,
    jobs: &mut HashMap<String, Touches>,
) -> Result<Touches> {
    let job = match command {
        AdminCommand::Replay(ReplaySpec {
            select: Some(s), ..
        }) => return Ok(Touches::of_selection(s)),
        AdminCommand::Resolve(r) | AdminCommand::Discard(r) => {
            return Ok(Touches::of_selection(&r.select))
        }
        AdminCommand::Purge(p) => return Ok(Touches::Tenants([p.tenant.clone()].into())),
        AdminCommand::Breaker(b) => return Ok(Touches::Tenants([b.tenant.clone()].into())),
        AdminCommand::Restore(r) => {
            return Ok(Touches::Tenants(
                r.ids.iter().map(|d| d.tenant.clone()).collect(),
            ))
        }
        AdminCommand::Assign(r) | AdminCommand::Escalate(r) | AdminCommand::Note(r) => {
            return Ok(Touches::Tenants(
                r.ids.iter().map(|d| d.tenant.clone()).collect(),
            ))
        }
        AdminCommand::Fold(f) => return Ok(Touches::Tenants([f.tenant.clone()].into())),
        AdminCommand::Replay(ReplaySpec {
            resume: Some(job), ..
        }) => job,
        AdminCommand::Cancel(c) => &c.job,
        AdminCommand::Replay(_) => return Ok(Touches::All),
    };
    job_touches(broker, job, jobs).await
}

/// The tenants a replay job touches, from its record's pinned spec.
pub async fn job_touches(
    broker: &Broker,
    job: &str,
    jobs: &mut HashMap<String, Touches>,
) -> Result<Touches> {
    if let Some(t) = jobs.get(job) {
        return Ok(t.clone());
    }
    let t = broker
        .job_get(job)
        .await?
        .and_then(|j| j.get(job_field::SPEC).cloned())
        .and_then(|spec| serde_json::from_str::<ReplaySpec>(&spec).ok())
        .and_then(|spec| spec.select)
        .map(|s| Touches::of_selection(&s))
        .unwrap_or(Touches::All);
    jobs.insert(job.to_owned(), t.clone());
    Ok(t)
}

/// Field of a command's record and of its audit entry holding its scope
/// ([`Touches::to_json`]).
pub const FIELD: &str = "tenants";

/// The scope of command `id` as far as it is recorded: its record's (written by the member
/// that began it), else the note the HTTP API kept when it sent it (while nobody has begun it),
/// else its replay job's; `None` when nothing says (unknown or expired).
pub async fn recorded(
    broker: &Broker,
    id: &str,
    record: Option<&HashMap<String, String>>,
) -> Result<Option<Touches>> {
    if let Some(t) = record.and_then(|r| r.get(FIELD)) {
        return Ok(Some(Touches::from_json(t)));
    }
    if let Some(t) = broker.admin_scope(id).await? {
        return Ok(Some(Touches::from_json(&t)));
    }
    if broker.job_get(id).await?.is_some() {
        return Ok(Some(job_touches(broker, id, &mut HashMap::new()).await?));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::select::{DlId, Filter};

    #[test]
    fn a_scope_is_the_tenants_a_command_names_and_reads_back() {
        let t = |names: &[&str]| Touches::Tenants(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(Touches::from_json(&t(&["acme"]).to_json()), t(&["acme"]));
        assert_eq!(Touches::from_json(&Touches::All.to_json()), Touches::All);
        assert_eq!(Touches::from_json("\"*\""), Touches::All);
        assert_eq!(Touches::from_json("[]"), Touches::All);
        assert_eq!(Touches::from_json("not json"), Touches::All);
        let ids = Selection::Ids(vec![
            DlId::parse("b/1-0", None).unwrap(),
            DlId::parse("a/2-0", None).unwrap(),
        ]);
        assert_eq!(Touches::of_selection(&ids), t(&["a", "b"]));
        let every = Selection::Filter(Filter {
            classes: vec!["timeout".into()],
            ..Filter::default()
        });
        assert_eq!(Touches::of_selection(&every), Touches::All);
    }
}
