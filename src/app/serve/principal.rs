//! The one place tenant scope is enforced. A [`Principal`] is a checked token: its name, role
//! and scope. Every route resolves tenants through it — a tenant named in a path, the tenants
//! of a filter, the ids of a selection, the tenants a command touches — so a tenant-scoped
//! token sees only its tenants everywhere: lists and counts never include another tenant, and
//! another tenant's name or id answers 404 exactly as one that does not exist.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::auth::{Role, Scope, TokenEntry};
use super::error::{ApiError, ApiResult};
use crate::admin::replay::job::field as job_field;
use crate::admin::select::{Filter, Selection};
use crate::admin::{AdminCommand, ReplaySpec};
use crate::broker::Broker;

/// Who makes a request: a checked token's holder, role and scope.
#[derive(Debug, Clone)]
pub struct Principal {
    name: String,
    role: Role,
    scope: Scope,
    see_payloads: bool,
}

/// The tenants an admin command touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touches {
    /// Every tenant (a filter without tenants), or it cannot be told (a job record gone).
    All,
    /// These tenants.
    Tenants(BTreeSet<String>),
}

impl Touches {
    /// The form the API notes for a command it sends (`"*"` or a list).
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

    fn of_selection(s: &Selection) -> Touches {
        match s {
            Selection::Ids(ids) => Touches::Tenants(ids.iter().map(|d| d.tenant.clone()).collect()),
            Selection::Filter(f) if f.tenants.is_empty() => Touches::All,
            Selection::Filter(f) => Touches::Tenants(f.tenants.iter().cloned().collect()),
        }
    }
}

/// Answers "tenant not found" the same way whether it does not exist or may not be seen.
fn no_tenant(name: &str) -> ApiError {
    ApiError::not_found(format!("tenant '{name}' not found"))
}

impl Principal {
    /// The principal of a configured token.
    pub fn from_token(t: &TokenEntry) -> Principal {
        Principal {
            name: t.name.clone(),
            role: t.role,
            scope: t.scope.clone(),
            see_payloads: t.see_payloads,
        }
    }

    /// The token's name: the operator of every change it makes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether payloads and outputs are shown to it.
    pub fn sees_payloads(&self) -> bool {
        self.see_payloads
    }

    /// Whether it may see every tenant.
    pub fn is_unscoped(&self) -> bool {
        self.scope == Scope::All
    }

    /// Who it is, as `GET /api/v1/me` shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "role": self.role.as_str(),
            "tenants": match &self.scope {
                Scope::All => json!(["*"]),
                Scope::Tenants(t) => json!(t),
            },
            "see_payloads": self.see_payloads,
        })
    }

    /// Whether it may see `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Tenants(t) => t.contains(tenant),
        }
    }

    /// The tenants of `all` it may see, in order.
    pub fn visible(&self, all: Vec<String>) -> Vec<String> {
        all.into_iter().filter(|t| self.may_see(t)).collect()
    }

    /// A tenant named by the request: 400 when the name is not a tenant name, 404 when it may
    /// not see it.
    pub fn tenant(&self, name: &str) -> ApiResult<String> {
        crate::task::validate_tenant(name).map_err(ApiError::bad_request)?;
        if !self.may_see(name) {
            return Err(no_tenant(name));
        }
        Ok(name.to_owned())
    }

    /// [`Principal::tenant`], and registered (it had a task enqueued): 404 otherwise.
    pub async fn registered_tenant(&self, broker: &Broker, name: &str) -> ApiResult<String> {
        let t = self.tenant(name)?;
        if !broker.is_tenant(&t).await? {
            return Err(no_tenant(name));
        }
        Ok(t)
    }

    /// The tenants a read or a change covers, from the ones the request names: each must be
    /// visible (404 otherwise). None named: for an unscoped token an empty list, which means
    /// every tenant; for a scoped one its own tenants (never empty), so "every tenant" can
    /// never reach past its scope.
    pub fn tenants(&self, requested: &[String]) -> ApiResult<Vec<String>> {
        for t in requested {
            self.tenant(t)?;
        }
        match (&self.scope, requested.is_empty()) {
            (Scope::Tenants(own), true) => Ok(own.iter().cloned().collect()),
            _ => Ok(requested.to_vec()),
        }
    }

    /// Narrows a dead-letter filter to what it may see ([`Principal::tenants`]).
    pub fn narrow(&self, filter: &mut Filter) -> ApiResult<()> {
        filter.tenants = self.tenants(&filter.tenants)?;
        Ok(())
    }

    /// Narrows what a change selects: listed dead letters must be of visible tenants (404 for
    /// one that is not, as for one that does not exist); a filter is narrowed.
    pub fn narrow_selection(&self, selection: &mut Selection) -> ApiResult<()> {
        match selection {
            Selection::Ids(ids) => {
                if let Some(d) = ids.iter().find(|d| !self.may_see(&d.tenant)) {
                    return Err(ApiError::not_found(format!("dead letter {d} not found")));
                }
                Ok(())
            }
            Selection::Filter(f) => self.narrow(f),
        }
    }

    /// Whether it may see (and act on) a command touching `touches`.
    pub fn may_see_touches(&self, touches: &Touches) -> bool {
        match (&self.scope, touches) {
            (Scope::All, _) => true,
            (Scope::Tenants(_), Touches::All) => false,
            (Scope::Tenants(own), Touches::Tenants(t)) => !t.is_empty() && t.is_subset(own),
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
) -> crate::error::Result<Touches> {
    let job = match command {
        AdminCommand::Replay(ReplaySpec {
            select: Some(s), ..
        }) => return Ok(Touches::of_selection(s)),
        AdminCommand::Resolve(r) | AdminCommand::Discard(r) => {
            return Ok(Touches::of_selection(&r.select))
        }
        AdminCommand::Purge(p) => return Ok(Touches::Tenants([p.tenant.clone()].into())),
        AdminCommand::Breaker(b) => return Ok(Touches::Tenants([b.tenant.clone()].into())),
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
) -> crate::error::Result<Touches> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::select::DlId;

    fn principal(scope: Scope) -> Principal {
        Principal {
            name: "t".into(),
            role: Role::Viewer,
            scope,
            see_payloads: false,
        }
    }

    fn acme() -> Principal {
        principal(Scope::Tenants(
            ["acme".to_owned(), "beta".to_owned()].into(),
        ))
    }

    #[test]
    fn a_scoped_token_never_reaches_past_its_tenants() {
        let p = acme();
        assert_eq!(p.tenants(&[]).unwrap(), vec!["acme", "beta"]);
        assert_eq!(p.tenants(&["beta".into()]).unwrap(), vec!["beta"]);
        let e = p.tenants(&["acme".into(), "other".into()]).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (404, "tenant 'other' not found")
        );
        assert_eq!(p.tenant("a b").unwrap_err().status.as_u16(), 400);
        assert_eq!(p.visible(vec!["acme".into(), "other".into()]), vec!["acme"]);
        let mut f = Filter::default();
        p.narrow(&mut f).unwrap();
        assert_eq!(f.tenants, vec!["acme", "beta"], "never `every tenant`");
        let mut s = Selection::Ids(vec![
            DlId::parse("acme/1-0", None).unwrap(),
            DlId::parse("other/1-0", None).unwrap(),
        ]);
        let e = p.narrow_selection(&mut s).unwrap_err();
        assert_eq!(e.message, "dead letter other/1-0 not found");
    }

    #[test]
    fn an_unscoped_token_keeps_every_tenant() {
        let p = principal(Scope::All);
        assert!(
            p.tenants(&[]).unwrap().is_empty(),
            "empty means every tenant"
        );
        assert!(p.may_see_touches(&Touches::All));
    }

    #[test]
    fn commands_are_seen_only_within_scope() {
        let p = acme();
        let t = |names: &[&str]| Touches::Tenants(names.iter().map(|s| s.to_string()).collect());
        assert!(p.may_see_touches(&t(&["acme"])));
        assert!(p.may_see_touches(&t(&["acme", "beta"])));
        assert!(!p.may_see_touches(&t(&["acme", "other"])));
        assert!(!p.may_see_touches(&Touches::All));
        assert!(!p.may_see_touches(&t(&[])));
        assert_eq!(Touches::from_json(&t(&["acme"]).to_json()), t(&["acme"]));
        assert_eq!(Touches::from_json("\"*\""), Touches::All);
        assert_eq!(Touches::from_json("[]"), Touches::All);
    }
}
