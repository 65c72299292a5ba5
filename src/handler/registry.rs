//! [`Handlers`]: handlers registered by name, so that configuration (`fleet.handler`) can name
//! one. The `redrive` application fills it with `demo` and `noop`; an embedder registers its
//! own (`"summarise"`).

use std::fmt;
use std::sync::Arc;

use super::handle::Handler;
use crate::error::{Error, Result};

/// Builds a handler when its name is the configured one.
type Factory = Box<dyn Fn() -> Result<Arc<dyn Handler>> + Send + Sync>;

/// Handler factories by name, in registration order.
///
/// A factory runs only for the configured name, so a handler that opens files or clients is
/// built only when it will serve.
///
/// ```
/// use std::sync::Arc;
/// use redrive::{Handler, Handlers, NoopHandler};
///
/// let mut handlers = Handlers::new();
/// handlers.register("summarise", || Ok(Arc::new(NoopHandler) as Arc<dyn Handler>));
/// assert_eq!(handlers.names(), ["summarise"]);
/// assert!(handlers.build("summarise").is_ok());
/// assert!(handlers.build("gpt").is_err());
/// ```
#[derive(Default)]
pub struct Handlers {
    /// `(name, factory)`; a name appears once.
    factories: Vec<(String, Factory)>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("names", &self.names())
            .finish()
    }
}

impl Handlers {
    /// An empty registry.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Registers `factory` under `name`, replacing an earlier registration of the same name.
    pub fn register<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Handlers
    where
        F: Fn() -> Result<Arc<dyn Handler>> + Send + Sync + 'static,
    {
        let name = name.into();
        let factory: Factory = Box::new(factory);
        match self.factories.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = factory,
            None => self.factories.push((name, factory)),
        }
        self
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.factories.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.iter().any(|(n, _)| n == name)
    }

    /// Refuses a name that is not registered, naming the setting and the known handlers
    /// (a configuration error: exit code 78).
    pub fn check(&self, name: &str) -> Result<()> {
        if self.contains(name) {
            Ok(())
        } else {
            Err(self.unknown(name))
        }
    }

    /// Builds the handler registered under `name`; an unknown name is refused as by
    /// [`Handlers::check`].
    pub fn build(&self, name: &str) -> Result<Arc<dyn Handler>> {
        match self.factories.iter().find(|(n, _)| n == name) {
            Some((_, factory)) => factory(),
            None => Err(self.unknown(name)),
        }
    }

    /// The error for a name nobody registered.
    fn unknown(&self, name: &str) -> Error {
        Error::Config(format!(
            "fleet.handler = '{name}' is unknown: the handlers are {}",
            self.names().join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::NoopHandler;

    fn noop() -> Result<Arc<dyn Handler>> {
        Ok(Arc::new(NoopHandler))
    }

    #[test]
    fn names_keep_registration_order_and_unknown_names_are_refused() {
        let mut h = Handlers::new();
        h.register("demo", noop).register("noop", noop);
        assert_eq!(h.names(), ["demo", "noop"]);
        assert!(h.check("noop").is_ok() && h.build("demo").is_ok());
        let err = h.build("gpt").err().map(|e| (e.to_string(), e.exit_code()));
        let (text, code) = err.unwrap_or_default();
        assert!(
            text.contains("fleet.handler = 'gpt' is unknown: the handlers are demo, noop"),
            "{text}"
        );
        assert_eq!(code, 78);
        h.register("demo", || Err(Error::Config("not built".into())));
        assert_eq!(
            h.names(),
            ["demo", "noop"],
            "re-registering replaces in place"
        );
        assert!(h.build("demo").is_err());
    }

    #[test]
    fn factories_run_only_for_the_built_name() {
        let mut h = Handlers::new();
        h.register("lazy", || panic!("built although not configured"));
        h.register("noop", noop);
        assert!(h.build("noop").is_ok());
    }
}
