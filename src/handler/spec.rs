//! [`HandlerSpec`]: one `[[handlers]]` entry of the configuration, as a handler factory
//! receives it.

use std::time::Duration;

/// One `[[handlers]]` entry: which kinds it serves, its type, its limits, and the type's own
/// keys (`url`, `command`, …) as written.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerSpec {
    /// The entry's position in `[[handlers]]`, from 0; messages name it `handlers[<index>]`.
    pub index: usize,
    /// The handler type: `http`, `pool`, `exec`, or a name registered in
    /// [`Handlers`](super::Handlers) (`demo`, `noop`, an embedder's own).
    pub type_name: String,
    /// Exact kind names and globs (`*` any run of characters, `?` one character).
    pub kinds: Vec<String>,
    /// How long one attempt may run.
    pub timeout: Duration,
    /// How many attempts of this handler may run at once.
    pub max_concurrent: usize,
    /// The entry's other keys, for the type to read and validate.
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl HandlerSpec {
    /// A spec of `type_name` for every kind, with the given limits and no options (what
    /// `fleet.handler = "<name>"` means).
    pub fn catch_all(type_name: &str, timeout: Duration, max_concurrent: usize) -> HandlerSpec {
        HandlerSpec {
            index: 0,
            type_name: type_name.to_owned(),
            kinds: vec!["*".to_owned()],
            timeout,
            max_concurrent,
            options: serde_json::Map::new(),
        }
    }

    /// How messages name this entry: `handlers[2] (type http)`.
    pub fn label(&self) -> String {
        format!("handlers[{}] (type {})", self.index, self.type_name)
    }
}
