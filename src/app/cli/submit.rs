//! Sending a change: an admin command goes through the admin command stream (or runs here with
//! `--local`), and its result is printed.

use serde_json::Value;

use super::args::{Mutation, MutationArgs};
use super::common::{context, print_json, usage};
use crate::admin::{AdminCommand, CommandResult, Envelope};
use crate::app::admin_client::submit_and_wait;
use crate::broker::Broker;
use crate::config::Settings;
use crate::error::Result;

/// Sends a command (or runs it with --local), waits, prints the result.
pub async fn send(
    b: Broker,
    settings: &Settings,
    m: &MutationArgs,
    v: Mutation,
    command: AdminCommand,
) -> Result<()> {
    command.validate().map_err(usage)?;
    let now = b.server_time_ms().await?;
    let env = Envelope {
        id: v.command_id,
        operator: v.operator,
        reason: v.reason,
        issued_at_ms: now,
        deadline_ms: if m.local {
            0
        } else {
            now + v.timeout.as_millis() as u64
        },
        command,
    };
    let ctx = context(b, settings);
    let result = submit_and_wait(&ctx, &env, m.local, v.timeout).await?;
    print_result(&result, m.json)
}

/// Prints a command's result (or only its details when it failed) and returns its outcome.
pub fn print_result(r: &CommandResult, json: bool) -> Result<()> {
    if json {
        print_json(&serde_json::to_value(r).unwrap_or(Value::Null));
    } else if r.outcome == "ok" {
        println!("{}", r.message);
        println!("command {} executed on {}", r.command_id, r.member);
    } else if !r.details.is_null() {
        println!("details: {}", r.details);
    }
    r.clone().into_result().map(|_| ())
}
