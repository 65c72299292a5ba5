//! [`Handlers`]: handler factories registered by type name, so that configuration
//! (`[[handlers]]`, `fleet.handler`) can name them. The `redrive` application registers `demo`
//! and `noop`; an embedder registers its own (`"summarise"`). The library's own types (`http`,
//! `pool`, `exec`) need no registration: they are looked up after the registered names (see
//! `config::handlers::builtin_types`, the one list of them).

use std::fmt;
use std::sync::Arc;

use super::handle::Handler;
use super::spec::HandlerSpec;
use crate::error::Result;

/// Builds a handler for one `[[handlers]]` entry of its type.
type Factory = Box<dyn Fn(&HandlerSpec) -> Result<Arc<dyn Handler>> + Send + Sync>;

/// Handler factories by type name, in registration order.
///
/// A factory runs only for the entries that name its type (once per entry), so a handler that
/// opens files, clients or processes is built only when it will serve. It receives the entry
/// ([`HandlerSpec`]: kinds, limits and the entry's own keys) and refuses options it does not
/// accept with a configuration error.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use redrive::{Handler, HandlerSpec, Handlers, NoopHandler};
///
/// let mut handlers = Handlers::new();
/// // A handler that needs nothing from its entry.
/// handlers.register_simple("summarise", || Ok(Arc::new(NoopHandler) as Arc<dyn Handler>));
/// // One that reads its entry's own keys.
/// handlers.register("echo", |spec: &HandlerSpec| {
///     let _greeting = spec.options.get("greeting");
///     Ok(Arc::new(NoopHandler) as Arc<dyn Handler>)
/// });
/// assert_eq!(handlers.names(), ["summarise", "echo"]);
/// let spec = HandlerSpec::catch_all("summarise", Duration::from_secs(30), 8);
/// assert!(handlers.build(&spec).is_ok());
/// assert!(handlers.build(&HandlerSpec { type_name: "gpt".into(), ..spec }).is_err());
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
    /// A registry without registrations; the library's own types (`http`, `pool`, `exec`) are
    /// available all the same.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Registers `factory` for the type `name`, replacing an earlier registration of the same
    /// name (a registration also replaces a library type of that name).
    pub fn register<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Handlers
    where
        F: Fn(&HandlerSpec) -> Result<Arc<dyn Handler>> + Send + Sync + 'static,
    {
        let name = name.into();
        let factory: Factory = Box::new(factory);
        match self.factories.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = factory,
            None => self.factories.push((name, factory)),
        }
        self
    }

    /// Registers a factory that needs nothing from its entry (see [`Handlers::register`]).
    pub fn register_simple<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Handlers
    where
        F: Fn() -> Result<Arc<dyn Handler>> + Send + Sync + 'static,
    {
        self.register(name, move |_: &HandlerSpec| factory())
    }

    /// The registered names, in registration order (without the library's own types).
    pub fn names(&self) -> Vec<&str> {
        self.factories.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.iter().any(|(n, _)| n == name)
    }

    /// Builds `spec`'s handler with the factory registered under its type, if any.
    pub(crate) fn build_registered(&self, spec: &HandlerSpec) -> Option<Result<Arc<dyn Handler>>> {
        self.factories
            .iter()
            .find(|(n, _)| *n == spec.type_name)
            .map(|(_, factory)| factory(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::handler::NoopHandler;
    use std::time::Duration;

    fn noop() -> Result<Arc<dyn Handler>> {
        Ok(Arc::new(NoopHandler))
    }

    fn spec(name: &str) -> HandlerSpec {
        HandlerSpec::catch_all(name, Duration::from_secs(1), 1)
    }

    #[test]
    fn names_keep_registration_order_and_re_registering_replaces() {
        let mut h = Handlers::new();
        h.register_simple("demo", noop)
            .register_simple("noop", noop);
        assert_eq!(h.names(), ["demo", "noop"]);
        assert!(h.contains("noop") && !h.contains("gpt"));
        assert!(matches!(h.build_registered(&spec("demo")), Some(Ok(_))));
        assert!(h.build_registered(&spec("gpt")).is_none());
        h.register_simple("demo", || Err(Error::Config("not built".into())));
        assert_eq!(
            h.names(),
            ["demo", "noop"],
            "re-registering replaces in place"
        );
        assert!(matches!(h.build_registered(&spec("demo")), Some(Err(_))));
    }

    #[test]
    fn factories_run_only_for_the_built_type_and_see_the_entry() {
        let mut h = Handlers::new();
        h.register_simple("lazy", || panic!("built although not configured"));
        h.register("echo", |s: &HandlerSpec| {
            if s.options.contains_key("greeting") {
                noop()
            } else {
                Err(Error::Config(format!("{}: greeting is missing", s.label())))
            }
        });
        let mut s = spec("echo");
        let err = h.build_registered(&s).and_then(|r| r.err());
        assert!(err.is_some_and(|e| e.to_string().contains("handlers[0] (type echo)")));
        s.options.insert("greeting".into(), "hi".into());
        assert!(matches!(h.build_registered(&s), Some(Ok(_))));
    }
}
