//! Handlers for agents that are not compiled into the fleet (PROTOCOL.md): an HTTP endpoint
//! (`http`), long-lived worker processes speaking JSON lines on stdio (`pool`), and one process
//! per attempt (`exec`). They share the protocol: the request built from a task, the events and
//! replies read back.
//!
//! This layer never talks to Redis: step events go to the attempt's [`TaskContext`]
//! (crate::handler::TaskContext), whose sink the fleet records.
//!
//! * `protocol` — the request body, the event and reply lines.
//! * `http` — the `http` handler type: one POST per attempt, JSON or streamed NDJSON replies.
//! * `process` — child-process plumbing of `pool` and `exec`: options, hardened spawn (process
//!   group, parent-death signal, a dedicated spawner thread), group kills, bounded lines.
//! * `pool` — the `pool` handler; `exec` — the `exec` handler.
//! * `webhook` — the sender of tenant notifications, signed like the `http` handler's requests.

pub(crate) mod exec;
pub(crate) mod http;
pub(crate) mod pool;
pub(crate) mod process;
pub(crate) mod protocol;
pub(crate) mod webhook;
