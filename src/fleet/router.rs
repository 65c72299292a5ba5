//! The router: which handler runs a task, by its kind. Built once per member from the routing
//! table (`[[handlers]]`, or one catch-all route), each route with its handler, its timeout and
//! a semaphore of `max_concurrent` permits. The first route whose kinds match wins; what a kind
//! resolved to is cached (a bounded map), so the globs are matched once per kind, not per task.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::handler::{Handler, HandlerSpec};

/// The most kinds whose route the cache remembers; kinds beyond it are matched every time
/// (producers choose kinds, so their number is not ours to bound).
const MAX_CACHED_KINDS: usize = 4096;

/// One route: an entry of the routing table with its handler and its concurrency cap.
pub(crate) struct Route {
    /// The entry as configured.
    pub spec: HandlerSpec,
    /// Its handler.
    pub handler: Arc<dyn Handler>,
    /// `max_concurrent` permits: an attempt of this route holds one while it runs.
    pub permits: Arc<Semaphore>,
    /// The route's metric label, `<index>:<type>`.
    pub label: Arc<str>,
    /// The setting its timeout comes from, for messages (`handlers[0].timeout_ms`).
    pub timeout_setting: String,
    /// Its position in the router, from 0 (the executor's meters are kept in this order).
    pub position: usize,
}

impl Route {
    /// How long one attempt of this route may run.
    pub fn timeout(&self) -> Duration {
        self.spec.timeout
    }
}

/// The member's routes, in order, with the kind → route cache.
pub(crate) struct Router {
    routes: Vec<Arc<Route>>,
    /// Kind → index of its route (`None`: no route matches).
    cache: RwLock<HashMap<String, Option<usize>>>,
}

impl Router {
    /// The routes of `table`, in order. `shorthand`: the table is the one catch-all entry of
    /// `fleet.handler` (or an embedder's single handler), whose timeout is
    /// `fleet.task_timeout_ms`.
    pub fn new(table: Vec<(HandlerSpec, Arc<dyn Handler>)>, shorthand: bool) -> Router {
        let routes = table
            .into_iter()
            .enumerate()
            .map(|(position, (spec, handler))| {
                let timeout_setting = if shorthand {
                    "fleet.task_timeout_ms".to_owned()
                } else {
                    format!("handlers[{}].timeout_ms", spec.index)
                };
                let label: Arc<str> = spec.metric_label().into();
                Arc::new(Route {
                    permits: Arc::new(Semaphore::new(spec.max_concurrent.max(1))),
                    position,
                    label,
                    timeout_setting,
                    handler,
                    spec,
                })
            })
            .collect();
        Router {
            routes,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The route that runs tasks of `kind`: the first whose kinds match, or `None`.
    pub fn route(&self, kind: &str) -> Option<&Arc<Route>> {
        let cached = self.cache.read().ok().and_then(|c| c.get(kind).copied());
        let index = match cached {
            Some(i) => i,
            None => {
                let i = self.routes.iter().position(|r| r.spec.matches(kind));
                if let Ok(mut c) = self.cache.write() {
                    if c.len() < MAX_CACHED_KINDS {
                        c.insert(kind.to_owned(), i);
                    }
                }
                i
            }
        };
        index.and_then(|i| self.routes.get(i))
    }

    /// Every route, in order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The configured patterns, for the error of a kind no route matches:
    /// `handlers[0] ["triage_*"], handlers[1] ["score_lead"]`.
    pub fn patterns(&self) -> String {
        self.routes
            .iter()
            .map(|r| format!("handlers[{}] {:?}", r.spec.index, r.spec.kinds))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How many kinds the cache holds.
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.read().map(|c| c.len()).unwrap_or(0)
    }

    /// Calls [`Handler::shutdown`] once on every route's handler (a handler shared by two
    /// routes once), in route order.
    pub async fn shutdown(&self) {
        let mut done: Vec<&Arc<dyn Handler>> = Vec::new();
        for r in &self.routes {
            if done.iter().any(|h| Arc::ptr_eq(h, &r.handler)) {
                continue;
            }
            r.handler.shutdown().await;
            done.push(&r.handler);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{HandlerFuture, NoopHandler, Outcome, ShutdownFuture, TaskContext};
    use crate::task::Task;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn spec(index: usize, type_name: &str, kinds: &[&str]) -> HandlerSpec {
        HandlerSpec {
            index,
            type_name: type_name.into(),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            timeout: Duration::from_secs(index as u64 + 1),
            max_concurrent: index + 1,
            options: Default::default(),
        }
    }

    fn router() -> Router {
        let noop: Arc<dyn Handler> = Arc::new(NoopHandler);
        Router::new(
            vec![
                (spec(0, "http", &["score_lead", "triage_*"]), noop.clone()),
                (spec(1, "pool", &["triage_?x", "summar*"]), noop.clone()),
                (spec(2, "exec", &["run_??"]), noop),
            ],
            false,
        )
    }

    fn index_of(r: &Router, kind: &str) -> Option<usize> {
        r.route(kind).map(|x| x.spec.index)
    }

    #[test]
    fn exact_names_and_globs_route_and_the_first_match_wins() {
        let r = router();
        assert_eq!(index_of(&r, "score_lead"), Some(0));
        assert_eq!(
            index_of(&r, "triage_ax"),
            Some(0),
            "handlers[0] matches first"
        );
        assert_eq!(index_of(&r, "summarise"), Some(1));
        assert_eq!(index_of(&r, "run_42"), Some(2));
        assert_eq!(index_of(&r, "run_4"), None);
        assert_eq!(index_of(&r, "score_leads"), None);
        let route = r.route("run_42").unwrap();
        assert_eq!(&*route.label, "2:exec");
        assert_eq!(route.timeout(), Duration::from_secs(3));
        assert_eq!(route.permits.available_permits(), 3);
        assert_eq!(route.timeout_setting, "handlers[2].timeout_ms");
        assert_eq!(
            r.patterns(),
            r#"handlers[0] ["score_lead", "triage_*"], handlers[1] ["triage_?x", "summar*"], handlers[2] ["run_??"]"#
        );
    }

    #[test]
    fn lookups_are_cached_misses_included_and_the_cache_is_bounded() {
        let r = router();
        assert_eq!(r.cached(), 0);
        for _ in 0..3 {
            assert_eq!(index_of(&r, "triage_x"), Some(0));
            assert_eq!(index_of(&r, "nobody"), None);
        }
        assert_eq!(r.cached(), 2);
        for i in 0..MAX_CACHED_KINDS + 10 {
            let kind = format!("k{i}");
            assert_eq!(index_of(&r, &kind), None);
        }
        assert_eq!(r.cached(), MAX_CACHED_KINDS);
        assert_eq!(
            index_of(&r, "summary"),
            Some(1),
            "uncached kinds still route"
        );
    }

    struct Closing(Arc<AtomicUsize>);

    impl Handler for Closing {
        fn handle(&self, _task: Arc<Task>, _ctx: TaskContext) -> HandlerFuture {
            Box::pin(async { Outcome::Done })
        }
        fn shutdown(&self) -> ShutdownFuture {
            let n = self.0.clone();
            Box::pin(async move {
                n.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    #[tokio::test]
    async fn shutdown_reaches_every_handler_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let shared: Arc<dyn Handler> = Arc::new(Closing(n.clone()));
        let own: Arc<dyn Handler> = Arc::new(Closing(n.clone()));
        let r = Router::new(
            vec![
                (spec(0, "a", &["a"]), shared.clone()),
                (spec(1, "b", &["b"]), shared),
                (spec(2, "c", &["c"]), own),
            ],
            true,
        );
        assert_eq!(r.routes()[0].timeout_setting, "fleet.task_timeout_ms");
        r.shutdown().await;
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
