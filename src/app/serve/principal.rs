//! The one place tenant scope is enforced. A [`Principal`] is a checked token: its name, role
//! and scope. Every route resolves tenants through it — a tenant named in a path, the tenants
//! of a filter, the ids of a selection, the tenants a command touches — so a tenant-scoped
//! token sees only its tenants everywhere: lists and counts never include another tenant, and
//! another tenant's name or id answers 404 exactly as one that does not exist.

use serde_json::{json, Value};

use super::auth::{Role, Scope, TokenEntry};
use super::error::{ApiError, ApiResult};
pub use crate::admin::scope::{touches, Touches};
use crate::admin::select::{Filter, Selection};
use crate::broker::Broker;

/// Who makes a request: a checked token's holder, role and scope.
#[derive(Debug, Clone)]
pub struct Principal {
    name: String,
    role: Role,
    scope: Scope,
    see_payloads: bool,
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
