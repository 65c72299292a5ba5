//! Tokens: how they are made (`redrive serve token`), stored (their SHA-256 only) and checked
//! (`Authorization: Bearer <token>`, compared in constant time against every configured
//! hash), and the role each carries. A checked token becomes a
//! [`super::principal::Principal`], which is where scope is enforced.
//!
//! A token is never logged, never printed back, and never stored: the config holds its hash.

use std::collections::BTreeSet;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// What a token may do. Ordered: each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads (payloads and outputs hidden unless the token may see them).
    Viewer,
    /// Reads, and replay, resolve, discard, cancel.
    Operator,
    /// Everything: also purge and breaker open/close.
    Admin,
}

impl Role {
    /// Reads a role's config name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Which tenants a token may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant (`tenants = ["*"]`).
    All,
    /// Only these (never empty).
    Tenants(BTreeSet<String>),
}

/// One configured token: who holds it, what it may do, and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The holder's name: the operator of every change made with it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Which tenants it may see.
    pub scope: Scope,
    /// Whether it sees payloads and outputs (operators and admins always do).
    pub see_payloads: bool,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
}

/// The configured tokens, looked up by the token a request presents.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    /// The tokens of `[[serve.tokens]]`.
    pub fn new(entries: Vec<TokenEntry>) -> Tokens {
        Tokens { entries }
    }

    /// The entry whose hash is the presented token's. Every entry is compared, each in
    /// constant time, so the time taken says nothing about which hash came close.
    pub fn find(&self, presented: &str) -> Option<&TokenEntry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(&e.hash, &digest) {
                found = Some(e);
            }
        }
        found
    }

    /// The entry named `name`, if the config still holds it (a browser session names its
    /// token; a token removed from the config ends its sessions).
    pub fn by_name(&self, name: &str) -> Option<&TokenEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Whether the request presents a bearer token at all (an `Authorization` header).
    pub fn presented(headers: &HeaderMap) -> bool {
        headers.contains_key(axum::http::header::AUTHORIZATION)
    }

    /// The token a request's `Authorization: Bearer <token>` header presents: 401 when the
    /// header is missing or malformed, or the token unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&TokenEntry, ApiError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "this route needs a token: send `Authorization: Bearer <token>` (an operator \
                     creates one with `redrive serve token --name NAME`)",
                )
            })?;
        let text = value.to_str().map_err(|_| {
            ApiError::unauthorized("the Authorization header is not text; send `Bearer <token>`")
        })?;
        let (scheme, token) = text.split_once(' ').ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
        })?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized(
                "the Authorization header is not `Bearer <token>`: no other scheme is accepted",
            ));
        }
        let token = token.trim();
        if token.is_empty() || token.len() > 512 {
            return Err(ApiError::unauthorized(
                "the bearer token is empty or too long",
            ));
        }
        self.find(token)
            .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))
    }
}

impl TokenEntry {
    /// A check of this entry's hash that a browser session keeps (a SHA-256 of the hash, so it
    /// is worth nothing to someone reading Redis): a token replaced under the same name no
    /// longer matches, and ends the sessions opened with the old one.
    pub fn session_check(&self) -> String {
        hex(&Sha256::digest(self.hash))
    }
}

/// Whether two byte strings are equal, looking at every byte whatever the first difference
/// (their lengths are not secret).
pub fn constant_time_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether two digests are equal, looking at every byte whatever the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: 32 bytes from the operating system's random source, as 64 hex characters.
pub fn new_token() -> crate::error::Result<String> {
    Ok(hex(&random32()?))
}

/// 32 bytes from the operating system's random source.
pub fn random32() -> crate::error::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        crate::error::Error::io(
            "reading the operating system's random source",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(bytes)
}

/// The SHA-256 of a token, hex: what `[[serve.tokens]]` stores.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> (Tokens, String) {
        let token = new_token().unwrap();
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&Sha256::digest(token.as_bytes()));
        let entry = TokenEntry {
            name: "ops".into(),
            role: Role::Operator,
            scope: Scope::All,
            see_payloads: true,
            hash,
        };
        (Tokens::new(vec![entry]), token)
    }

    #[test]
    fn tokens_are_random_hex_and_hashed() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_bearer_token_is_found_by_its_hash_and_nothing_else() {
        let (tokens, token) = tokens();
        let mut h = HeaderMap::new();
        let bearer = |v: &str| HeaderValue::from_str(v).unwrap();
        h.insert("authorization", bearer(&format!("Bearer {token}")));
        assert_eq!(tokens.authenticate(&h).unwrap().name, "ops");
        h.insert("authorization", bearer(&format!("bearer  {token} ")));
        assert!(tokens.authenticate(&h).is_ok(), "scheme case and spaces");
        for bad in [
            format!("Basic {token}"),
            format!("Bearer {}", &token[1..]),
            "Bearer".into(),
            "Bearer ".into(),
            token.clone(),
        ] {
            h.insert("authorization", bearer(&bad));
            let e = tokens.authenticate(&h).unwrap_err();
            assert_eq!(e.status.as_u16(), 401, "{bad}");
            assert!(!e.message.contains(&token), "the token is never echoed");
        }
        h.remove("authorization");
        assert_eq!(tokens.authenticate(&h).unwrap_err().status.as_u16(), 401);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
