//! The `redrive` application on top of the library: the command line, the demo and its
//! simulated agent, the benchmark, and the operators' reports.

pub mod admin_client;
pub mod bench;
pub mod cli;
pub mod demo;
pub mod demo_agent;
pub mod report;
pub mod view;
