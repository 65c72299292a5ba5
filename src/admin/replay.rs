//! Replay: a dead letter becomes a fresh task in its lane again.
//!
//! [`build`] is pure: it turns a dead letter's fields into the replayed task (same task id,
//! `replay_of` and `replayed_by` recorded, completed steps and history carried forward, attempt
//! 1 so the retry budget starts afresh, schema migrations then the operator's merge patch
//! applied, optionally another kind) or says why it must not or cannot be replayed.
//!
//! [`run`] executes a replay command as a **job** whose spec and progress live in Redis
//! (`redrive:{@admin}:job:<id>`): the selection is pinned at the start (a filter without
//! `--until` gets the start time, so tasks that fail again after their replay are not replayed
//! again by the same job), entries are replayed in bounded atomic steps (scripts/replay.lua
//! deletes each dead letter and appends its task in one step, and skips dead letters already
//! gone), progress is saved after each step, a cancel request is read after each step, and a
//! resumed job recomputes what is left: the entries it replayed are gone from the dead letters,
//! so nothing is replayed twice.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::context::{AdminContext, Executed};
use super::select::{field_str, DlId, Filter, Selection};
use super::{Envelope, ReplaySpec};
use crate::broker::{Broker, Fields};
use crate::deadletter::field as dl;
use crate::error::{Error, Result};
use crate::handler::FailureClass;
use crate::schema::migrate::Migrations;
use crate::schema::patch::merge_patch;
use crate::shutdown::Shutdown;
use crate::task::{field, validate_payload, Limits, Task};
use crate::telemetry::{names, tenant_label};

/// How a replayed task is built.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions<'a> {
    /// A JSON merge patch applied to the payload after migrations.
    pub patch: Option<&'a Value>,
    /// Another kind to route the task to.
    pub target_kind: Option<&'a str>,
    /// Replay partial_execution dead letters too.
    pub force: bool,
    /// Who replays it.
    pub operator: &'a str,
    /// Registered schema migrations.
    pub migrations: &'a Migrations,
    /// Payload limits.
    pub limits: &'a Limits,
    /// Now, ms (the replayed task's enqueue time).
    pub now_ms: u64,
}

/// What [`build`] made of a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Built {
    /// Ready to go back into the lane; the migration steps applied, as (from, to).
    Ready(Box<Task>, Vec<(u32, u32)>),
    /// A guardrail refuses it (partial_execution without `--force`).
    Refused(String),
    /// It cannot be replayed as it is (unreadable entry, failing migration, payload too big).
    Invalid(String),
}

/// Builds the task that replays the dead letter `id` with `fields`.
pub fn build(id: &DlId, fields: &Fields, opts: &BuildOptions<'_>) -> Built {
    let class = field_str(fields, dl::CLASS).unwrap_or("");
    if class == FailureClass::PartialExecution.as_str() && !opts.force {
        return Built::Refused(format!(
            "{id} is partial_execution: steps {} already ran and may have had side effects; \
             review it, then replay with --force",
            field_str(fields, field::STEPS).unwrap_or("[]")
        ));
    }
    let orig_id = field_str(fields, dl::ORIG_ID).unwrap_or(&id.id);
    let parsed = match field_str(fields, dl::RAW) {
        // A malformed entry: what was read is kept in `raw`; it replays only if it now reads as
        // a task (for example with --target-kind supplying a missing kind).
        Some(raw) if field_str(fields, field::KIND).is_none() => {
            let map = match crate::deadletter::decode_raw(raw) {
                Ok(m) => m,
                Err(e) => {
                    return Built::Invalid(format!("{id}: its raw fields are unreadable: {e}"))
                }
            };
            let mut pairs: Fields = map
                .into_iter()
                .filter(|(k, _)| {
                    !(opts.target_kind.is_some() && k.as_slice() == field::KIND.as_bytes())
                })
                .collect();
            if let Some(k) = opts.target_kind {
                pairs.push((field::KIND.as_bytes().to_vec(), k.as_bytes().to_vec()));
            }
            Task::from_fields(&id.tenant, orig_id, &pairs, opts.limits).map_err(|m| {
                format!(
                    "{id} was a malformed entry and still is ({}): export it, fix it and enqueue it \
                     again, or discard it",
                    m.reason
                )
            })
        }
        _ => Task::from_dead_letter(&id.tenant, orig_id, fields, opts.limits)
            .map_err(|m| format!("{id} cannot be read as a task: {}", m.reason)),
    };
    let mut task = match parsed {
        Ok(t) => t,
        Err(why) => return Built::Invalid(why),
    };
    let payload: Value = match serde_json::from_str(&task.payload) {
        Ok(v) => v,
        Err(e) => return Built::Invalid(format!("{id}: payload is not JSON: {e}")),
    };
    let migrated = match opts
        .migrations
        .migrate(&task.kind, task.schema_version, payload)
    {
        Ok(m) => m,
        Err(e) => return Built::Invalid(format!("{id}: {e}")),
    };
    let mut payload = migrated.payload;
    if let Some(p) = opts.patch {
        merge_patch(&mut payload, p);
    }
    task.payload = payload.to_string();
    if let Err(e) = validate_payload(&task.payload, opts.limits) {
        return Built::Invalid(format!("{id}: after migration and patch, {e}"));
    }
    task.schema_version = migrated.schema_version;
    if let Some(k) = opts.target_kind {
        task.kind = k.to_owned();
    }
    task.attempt = 1;
    task.enqueued_at_ms = opts.now_ms;
    task.replay_of = Some(id.id.clone());
    task.replayed_by = Some(opts.operator.to_owned());
    Built::Ready(Box::new(task), migrated.steps)
}

/// One dead letter selected for a replay, with what ordering needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// Where it is.
    pub id: DlId,
    /// The `--order-by-key` value (the payload field as JSON text), if any.
    pub key: Option<String>,
    /// When its task was first enqueued, ms.
    pub first_enqueued_ms: u64,
}

fn selected(id: DlId, fields: &Fields, order_key: Option<&str>) -> Selected {
    let key = order_key.and_then(|k| {
        let payload: Value = serde_json::from_str(field_str(fields, field::PAYLOAD)?).ok()?;
        payload.get(k).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    });
    let num = |name| field_str(fields, name).and_then(|v| v.parse::<u64>().ok());
    let first_enqueued_ms = num(field::FIRST_ENQUEUED_AT)
        .or_else(|| num(field::ENQUEUED_AT))
        .unwrap_or_else(|| super::select::id_ms(&id.id));
    Selected {
        id,
        key,
        first_enqueued_ms,
    }
}

/// Orders a selection: chronologically by dead-letter id (then tenant) by default; with a key,
/// grouped by key value, groups in the order of their earliest task, each group in the order
/// its tasks were first enqueued; entries without the key come last, chronologically.
pub fn order(items: &mut [Selected], by_key: bool) {
    if !by_key {
        items.sort_by(|a, b| a.id.order(&b.id));
        return;
    }
    let within = |a: &Selected, b: &Selected| {
        a.first_enqueued_ms
            .cmp(&b.first_enqueued_ms)
            .then_with(|| a.id.order(&b.id))
    };
    // Each key's earliest task decides where its group goes.
    let mut first: HashMap<String, (u64, DlId)> = HashMap::new();
    for s in items.iter() {
        let Some(k) = &s.key else { continue };
        let cand = (s.first_enqueued_ms, s.id.clone());
        match first.get_mut(k) {
            Some(e) => {
                if cand.0 < e.0 || (cand.0 == e.0 && cand.1.order(&e.1) == Ordering::Less) {
                    *e = cand;
                }
            }
            None => {
                first.insert(k.clone(), cand);
            }
        }
    }
    items.sort_by(|a, b| match (&a.key, &b.key) {
        (None, None) => a.id.order(&b.id),
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(ka), Some(kb)) if ka == kb => within(a, b),
        (Some(ka), Some(kb)) => match (first.get(ka), first.get(kb)) {
            (Some(fa), Some(fb)) => {
                fa.0.cmp(&fb.0)
                    .then_with(|| fa.1.order(&fb.1))
                    .then_with(|| ka.cmp(kb))
            }
            _ => ka.cmp(kb),
        },
    });
}

/// Page size of dead-letter scans.
pub const SCAN_PAGE: usize = 500;

/// The tenants a filter covers: its own, or every registered tenant.
pub async fn tenants_of(broker: &Broker, filter: &Filter) -> Result<Vec<String>> {
    if filter.tenants.is_empty() {
        broker.tenants().await
    } else {
        let mut t = filter.tenants.clone();
        t.sort();
        t.dedup();
        Ok(t)
    }
}

/// Every dead letter a filter matches, with its fields, passed to `each` tenant by tenant in
/// stream order. Returns how many matched.
pub async fn scan<F>(broker: &Broker, filter: &Filter, mut each: F) -> Result<u64>
where
    F: FnMut(&str, crate::broker::Entry, &Fields) -> Result<()>,
{
    let (start, end) = filter.range();
    let mut n = 0;
    for tenant in tenants_of(broker, filter).await? {
        let mut from = start.clone();
        loop {
            let page = broker.dlq_range(&tenant, &from, &end, SCAN_PAGE).await?;
            let len = page.len();
            for entry in page {
                from = format!("({}", entry.id);
                let Some(fields) = entry.fields.clone() else {
                    continue;
                };
                if filter.matches(&fields) {
                    n += 1;
                    each(&tenant, entry, &fields)?;
                }
            }
            if len < SCAN_PAGE {
                break;
            }
        }
    }
    Ok(n)
}

/// Pins a filter's open end to `now` so a job selects what existed when it started.
pub fn pin(select: &Selection, now_ms: u64) -> Selection {
    match select {
        Selection::Filter(f) if f.until_ms.is_none() => Selection::Filter(Filter {
            until_ms: Some(now_ms),
            ..f.clone()
        }),
        other => other.clone(),
    }
}

/// The selection in replay order; listed ids that do not exist are returned apart.
async fn select(ctx: &AdminContext, spec: &ReplaySpec) -> Result<(Vec<Selected>, Vec<DlId>)> {
    let key = spec.order_by_key.as_deref();
    let mut items = Vec::new();
    let mut missing = Vec::new();
    match &spec.select {
        Some(Selection::Ids(ids)) => {
            for (tenant, group) in by_tenant(ids) {
                let refs: Vec<&str> = group.iter().map(|d| d.id.as_str()).collect();
                let entries = ctx.broker.dlq_entries(&tenant, &refs).await?;
                for (d, e) in group.into_iter().zip(entries) {
                    match e.and_then(|e| e.fields) {
                        Some(f) => items.push(selected(d, &f, key)),
                        None => missing.push(d),
                    }
                }
            }
        }
        Some(Selection::Filter(f)) => {
            scan(&ctx.broker, f, |tenant, entry, fields| {
                items.push(selected(
                    DlId {
                        tenant: tenant.to_owned(),
                        id: entry.id,
                    },
                    fields,
                    key,
                ));
                Ok(())
            })
            .await?;
        }
        None => return Err(Error::Usage("the replay selects nothing".into())),
    }
    order(&mut items, key.is_some());
    Ok((items, missing))
}

/// Groups ids by tenant, keeping their order within each tenant; a repeated id counts once.
fn by_tenant(ids: &[DlId]) -> Vec<(String, Vec<DlId>)> {
    let mut out: Vec<(String, Vec<DlId>)> = Vec::new();
    for d in super::select::dedup(ids.to_vec()) {
        match out.iter_mut().find(|(t, _)| *t == d.tenant) {
            Some((_, v)) => v.push(d),
            None => out.push((d.tenant.clone(), vec![d])),
        }
    }
    out
}

/// One entry of a dry run's sample.
#[derive(Debug, Clone, Serialize)]
pub struct SampleItem {
    /// The dead letter.
    pub id: String,
    /// Its task id.
    pub task_id: String,
    /// Its class.
    pub class: String,
    /// `replay`, `refused` or `invalid`.
    pub verdict: String,
    /// Why not, for refused and invalid ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The kind it would run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The payload it would run with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Migrations it would go through, as "from->to".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<String>,
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// Dead letters selected.
    pub selected: u64,
    /// Of those, how many would be replayed.
    pub would_replay: u64,
    /// Refused by a guardrail.
    pub refused: u64,
    /// Not replayable as they are.
    pub invalid: u64,
    /// Listed ids that do not exist.
    pub missing: Vec<String>,
    /// The first few, in replay order, as they would be replayed.
    pub sample: Vec<SampleItem>,
}

/// Evaluates a replay without writing anything (`--dry-run`).
pub async fn dry_run(ctx: &AdminContext, spec: &ReplaySpec, operator: &str) -> Result<DryRun> {
    let now = ctx.broker.server_time_ms().await?;
    let mut spec = spec.clone();
    spec.select = spec.select.as_ref().map(|s| pin(s, now));
    let (items, missing) = select(ctx, &spec).await?;
    let mut out = DryRun {
        selected: items.len() as u64,
        would_replay: 0,
        refused: 0,
        invalid: 0,
        missing: missing.iter().map(|d| d.to_string()).collect(),
        sample: Vec::new(),
    };
    let opts = build_options(ctx, &spec, operator, now);
    for chunk in items.chunks(ctx.settings.batch) {
        for (tenant, group) in by_tenant(&chunk.iter().map(|s| s.id.clone()).collect::<Vec<_>>()) {
            let refs: Vec<&str> = group.iter().map(|d| d.id.as_str()).collect();
            let entries = ctx.broker.dlq_entries(&tenant, &refs).await?;
            for (d, e) in group.into_iter().zip(entries) {
                let Some(fields) = e.and_then(|e| e.fields) else {
                    continue;
                };
                let built = build(&d, &fields, &opts);
                let mut item = SampleItem {
                    id: d.to_string(),
                    task_id: field_str(&fields, field::TASK_ID).unwrap_or("").into(),
                    class: field_str(&fields, dl::CLASS).unwrap_or("").into(),
                    verdict: String::new(),
                    why: None,
                    kind: None,
                    payload: None,
                    migrations: Vec::new(),
                };
                match built {
                    Built::Ready(task, steps) => {
                        out.would_replay += 1;
                        item.verdict = "replay".into();
                        item.kind = Some(task.kind.clone());
                        item.payload = serde_json::from_str(&task.payload).ok();
                        item.migrations = steps.iter().map(|(a, b)| format!("{a}->{b}")).collect();
                    }
                    Built::Refused(why) => {
                        out.refused += 1;
                        item.verdict = "refused".into();
                        item.why = Some(why);
                    }
                    Built::Invalid(why) => {
                        out.invalid += 1;
                        item.verdict = "invalid".into();
                        item.why = Some(why);
                    }
                }
                if out.sample.len() < ctx.settings.sample {
                    out.sample.push(item);
                }
            }
        }
    }
    Ok(out)
}

fn build_options<'a>(
    ctx: &'a AdminContext,
    spec: &'a ReplaySpec,
    operator: &'a str,
    now_ms: u64,
) -> BuildOptions<'a> {
    BuildOptions {
        patch: spec.patch.as_ref(),
        target_kind: spec.target_kind.as_deref(),
        force: spec.force,
        operator,
        migrations: &ctx.settings.migrations,
        limits: &ctx.limits,
        now_ms,
    }
}

/// A job's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    replayed: u64,
    skipped: u64,
    refused: u64,
    invalid: u64,
}

fn get_u64(job: &HashMap<String, String>, name: &str) -> u64 {
    job.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The details a replay result carries: the job's counters and samples.
fn details(job: &str, job_fields: &HashMap<String, String>, samples: &Samples) -> Value {
    json!({
        "job": job,
        "state": job_fields.get("state").cloned().unwrap_or_default(),
        "selected": get_u64(job_fields, "selected"),
        "replayed": get_u64(job_fields, "replayed"),
        "skipped": get_u64(job_fields, "skipped"),
        "refused": get_u64(job_fields, "refused"),
        "invalid": get_u64(job_fields, "invalid"),
        "refused_sample": samples.refused,
        "invalid_sample": samples.invalid,
    })
}

#[derive(Debug, Default)]
struct Samples {
    refused: Vec<String>,
    invalid: Vec<String>,
}

impl Samples {
    fn push(list: &mut Vec<String>, s: String) {
        if list.len() < 10 {
            list.push(s);
        }
    }
}

/// Executes a replay command: starts its job (or resumes one) and runs it to the end, to a
/// cancel request, or until `stop` fires (member shutdown: the job is left `interrupted` and
/// the command pending, so a restart or another member resumes it).
pub async fn run(
    ctx: &AdminContext,
    env: &Envelope,
    spec: &ReplaySpec,
    stop: &Shutdown,
) -> Executed {
    let mut samples = Samples::default();
    let (job, spec, selected) = match start(ctx, env, spec).await {
        Ok(Started::Go(job, spec, selected)) => (job, *spec, selected),
        Ok(Started::Nothing(message, details)) => return Executed::finished(Ok(message), details),
        Err(e) => return Executed::finished(Err(e), Value::Null),
    };
    let result = steps(ctx, env, &job, &spec, selected, stop, &mut samples).await;
    let fields = ctx
        .broker
        .job_get(&job)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut d = details(&job, &fields, &samples);
    match result {
        Ok(Step::Interrupted) => Executed::Interrupted,
        Ok(Step::Done) => {
            let _ = ctx.broker.job_expire(&job, ctx.settings.record_ttl).await;
            d["state"] = json!("done");
            let message = summary(&job, &fields, &spec);
            match single_failure(&spec, &fields, &samples) {
                Some(e) => Executed::finished(Err(e), d),
                None => Executed::finished(Ok(message), d),
            }
        }
        Ok(Step::Cancelled(by)) => {
            d["state"] = json!("cancelled");
            let message = format!(
                "replay job {job} cancelled (by command {by}) after {} of {} dead letters; nothing \
                 is replayed twice on resume: redrive dlq replay --resume {job} --reason ...",
                get_u64(&fields, "replayed") + get_u64(&fields, "skipped"),
                get_u64(&fields, "selected")
            );
            Executed::finished(Err(Error::Interrupted(message)), d)
        }
        Err(e) => {
            let _ = ctx
                .broker
                .job_set(
                    &job,
                    &[("state", "failed".into()), ("message", e.to_string())],
                    &[],
                )
                .await;
            d["state"] = json!("failed");
            Executed::finished(
                Err(Error::Remote {
                    code: e.exit_code(),
                    message: format!(
                        "replay job {job} stopped: {e}; resume it with --resume {job}"
                    ),
                }),
                d,
            )
        }
    }
}

/// For a replay of explicitly listed ids that replayed none: the reason as an error.
fn single_failure(
    spec: &ReplaySpec,
    fields: &HashMap<String, String>,
    samples: &Samples,
) -> Option<Error> {
    if !matches!(spec.select, Some(Selection::Ids(_))) || get_u64(fields, "replayed") > 0 {
        return None;
    }
    if let Some(why) = samples.refused.first() {
        return Some(Error::Refused(why.clone()));
    }
    if let Some(why) = samples.invalid.first() {
        return Some(Error::InvalidTask(why.clone()));
    }
    None
}

fn summary(job: &str, fields: &HashMap<String, String>, spec: &ReplaySpec) -> String {
    let mut m = format!(
        "replayed {} of {} dead letters",
        get_u64(fields, "replayed"),
        get_u64(fields, "selected")
    );
    let skipped = get_u64(fields, "skipped");
    let refused = get_u64(fields, "refused");
    let invalid = get_u64(fields, "invalid");
    if skipped > 0 {
        m.push_str(&format!(
            ", {skipped} already gone (replayed or removed by someone else)"
        ));
    }
    if refused > 0 {
        m.push_str(&format!(
            ", {refused} partial_execution refused (review them, then replay with --force)"
        ));
    }
    if invalid > 0 {
        m.push_str(&format!(", {invalid} not replayable as they are"));
    }
    if let Some(k) = &spec.order_by_key {
        m.push_str(&format!(", ordered by payload field '{k}'"));
    }
    format!("{m} [job {job}]")
}

enum Started {
    /// Run job `.0` with spec `.1`; `.2` is the selection a fresh job just pinned (its counts
    /// are of exactly these entries), `None` for a resumed or taken-over job, which selects
    /// again what is left.
    Go(String, Box<ReplaySpec>, Option<Vec<Selected>>),
    Nothing(String, Value),
}

async fn start(ctx: &AdminContext, env: &Envelope, spec: &ReplaySpec) -> Result<Started> {
    let b = &ctx.broker;
    spec.validate().map_err(Error::Usage)?;
    let now = b.server_time_ms().await?;
    let running = |job: &str, member: &str| -> Vec<(&'static str, String)> {
        vec![
            ("state", "running".into()),
            ("command", env.id.clone()),
            ("member", member.to_owned()),
            ("updated_at", now.to_string()),
            ("job", job.to_owned()),
        ]
    };
    if let Some(job) = &spec.resume {
        let Some(fields) = b.job_get(job).await? else {
            return Err(Error::NotFound(format!(
                "no replay job '{job}' (finished jobs are kept for admin.record_ttl_ms)"
            )));
        };
        let mut stored: ReplaySpec = fields
            .get("spec")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| Error::Protocol(format!("replay job '{job}' has no readable spec")))?;
        let state = fields.get("state").map(String::as_str).unwrap_or("");
        if state == "done" {
            return Ok(Started::Nothing(
                format!("replay job {job} had already finished; nothing left to resume"),
                details(job, &fields, &Samples::default()),
            ));
        }
        let updated = get_u64(&fields, "updated_at");
        let fresh = now.saturating_sub(updated) < ctx.settings.claim_idle.as_millis() as u64;
        if state == "running" && fresh && fields.get("command") != Some(&env.id) {
            return Err(Error::Refused(format!(
                "replay job {job} is running on {} (command {}); cancel it first with `redrive dlq cancel {job}`",
                fields.get("member").map(String::as_str).unwrap_or("?"),
                fields.get("command").map(String::as_str).unwrap_or("?"),
            )));
        }
        stored.rate = spec.rate;
        b.job_set(job, &running(job, &ctx.executor), &["cancel"])
            .await?;
        tracing::info!(job = %job, command_id = %env.id, "resuming replay job");
        return Ok(Started::Go(job.clone(), Box::new(stored), None));
    }
    let job = env.id.clone();
    if let Some(fields) = b.job_get(&job).await? {
        // This command started the job already and was taken over (its member died): carry on
        // with the stored spec.
        let stored: ReplaySpec = fields
            .get("spec")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| Error::Protocol(format!("replay job '{job}' has no readable spec")))?;
        // Its member may have died right after the job ended: the recorded end stands.
        match fields.get("state").map(String::as_str) {
            Some("done") => {
                return Ok(Started::Nothing(
                    summary(&job, &fields, &stored),
                    details(&job, &fields, &Samples::default()),
                ))
            }
            Some("cancelled") => {
                return Err(Error::Interrupted(format!(
                    "replay job {job} was cancelled; resume it with --resume {job}"
                )))
            }
            _ => {}
        }
        b.job_set(&job, &running(&job, &ctx.executor), &[]).await?;
        return Ok(Started::Go(job, Box::new(stored), None));
    }
    let mut pinned = spec.clone();
    pinned.select = spec.select.as_ref().map(|s| pin(s, now));
    let (items, missing) = select(ctx, &pinned).await?;
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().take(10).map(|d| d.to_string()).collect();
        return Err(Error::NotFound(format!(
            "{} of the listed dead letters do not exist: {}{}",
            missing.len(),
            list.join(", "),
            if missing.len() > 10 { ", …" } else { "" }
        )));
    }
    if let Some(Selection::Ids(_)) = &pinned.select {
        // Listed ids are all or nothing: any that a guardrail refuses or that cannot be
        // replayed stops the command before anything changes.
        let opts = build_options(ctx, &pinned, &env.operator, now);
        for (tenant, group) in by_tenant(&items.iter().map(|s| s.id.clone()).collect::<Vec<_>>()) {
            let refs: Vec<&str> = group.iter().map(|d| d.id.as_str()).collect();
            for (d, e) in group.iter().zip(b.dlq_entries(&tenant, &refs).await?) {
                let fields = e.and_then(|e| e.fields).unwrap_or_default();
                match build(d, &fields, &opts) {
                    Built::Ready(..) => {}
                    Built::Refused(why) => return Err(Error::Refused(why)),
                    Built::Invalid(why) => return Err(Error::InvalidTask(why)),
                }
            }
        }
    }
    let spec_json = serde_json::to_string(&pinned)
        .map_err(|e| Error::Protocol(format!("cannot encode the replay spec: {e}")))?;
    let mut fields = running(&job, &ctx.executor);
    fields.extend([
        ("spec", spec_json),
        ("selected", items.len().to_string()),
        ("operator", env.operator.clone()),
        ("reason", env.reason.clone()),
        ("created_at", now.to_string()),
    ]);
    b.job_set(&job, &fields, &[]).await?;
    Ok(Started::Go(job, Box::new(pinned), Some(items)))
}

enum Step {
    Done,
    Cancelled(String),
    Interrupted,
}

async fn steps(
    ctx: &AdminContext,
    env: &Envelope,
    job: &str,
    spec: &ReplaySpec,
    selected: Option<Vec<Selected>>,
    stop: &Shutdown,
    samples: &mut Samples,
) -> Result<Step> {
    let b = &ctx.broker;
    let items = match selected {
        Some(items) => items,
        None => select(ctx, spec).await?.0,
    };
    let chunk = if spec.rate > 0 {
        ctx.settings.batch.min((spec.rate as usize / 4).max(1))
    } else {
        ctx.settings.batch
    };
    let began = Instant::now();
    let mut done: u64 = 0;
    // A cancel requested while the job waited (interrupted, or queued behind a takeover) stops
    // it before its first step.
    if let Some(by) = b.job_get(job).await?.and_then(|j| j.get("cancel").cloned()) {
        b.job_set(job, &[("state", "cancelled".into())], &["cancel"])
            .await?;
        return Ok(Step::Cancelled(by));
    }
    for part in items.chunks(chunk) {
        if stop.is_triggered() {
            b.job_set(job, &[("state", "interrupted".into())], &[])
                .await?;
            return Ok(Step::Interrupted);
        }
        let now = crate::task::now_ms();
        let opts = build_options(ctx, spec, &env.operator, now);
        let minute = now / 60_000;
        let mut counts = Counts::default();
        // Consecutive entries of one tenant form one atomic script call, so the order holds.
        let mut i = 0;
        while i < part.len() {
            let tenant = part[i].id.tenant.clone();
            let mut j = i;
            while j < part.len() && part[j].id.tenant == tenant {
                j += 1;
            }
            let refs: Vec<&str> = part[i..j].iter().map(|s| s.id.id.as_str()).collect();
            let entries = b.dlq_entries(&tenant, &refs).await?;
            let mut ready = Vec::new();
            for (s, e) in part[i..j].iter().zip(entries) {
                let Some(fields) = e.and_then(|e| e.fields) else {
                    counts.skipped += 1;
                    continue;
                };
                match build(&s.id, &fields, &opts) {
                    Built::Ready(task, _) => ready.push((s.id.id.clone(), task.to_fields())),
                    Built::Refused(why) => {
                        counts.refused += 1;
                        Samples::push(&mut samples.refused, why);
                    }
                    Built::Invalid(why) => {
                        counts.invalid += 1;
                        Samples::push(&mut samples.invalid, why);
                    }
                }
            }
            let results = b
                .replay(&tenant, minute, crate::broker::STATS_KEEP, &ready)
                .await?;
            let replayed = results.iter().filter(|r| r.is_some()).count() as u64;
            counts.replayed += replayed;
            counts.skipped += results.len() as u64 - replayed;
            if replayed > 0 {
                metrics::counter!(names::DLQ_REPLAYED, "tenant" => tenant_label(&tenant))
                    .increment(replayed);
            }
            i = j;
        }
        done += part.len() as u64;
        let cancel = b
            .job_progress(
                job,
                &[
                    ("replayed", counts.replayed),
                    ("skipped", counts.skipped),
                    ("refused", counts.refused),
                    ("invalid", counts.invalid),
                ],
                &[
                    ("updated_at", crate::task::now_ms().to_string()),
                    ("member", ctx.executor.clone()),
                ],
            )
            .await?;
        if let Some(by) = cancel {
            b.job_set(job, &[("state", "cancelled".into())], &["cancel"])
                .await?;
            return Ok(Step::Cancelled(by));
        }
        if spec.rate > 0 {
            let due = began + Duration::from_secs_f64(done as f64 / spec.rate as f64);
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    _ = stop.wait() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    b.job_set(job, &[("state", "done".into())], &[]).await?;
    Ok(Step::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn dead_letter(class: &str) -> Fields {
        fields(&[
            ("task_id", "t-7"),
            ("tenant", "acme"),
            ("kind", "triage"),
            ("payload", r#"{"ticket":7,"simulate":"malformed_output"}"#),
            ("attempt", "3"),
            ("enqueued_at", "2000"),
            ("first_enqueued_at", "1000"),
            ("schema_version", "1"),
            ("trace_id", "tr-1"),
            ("steps", r#"["lookup","update"]"#),
            (
                "history",
                r#"[{"attempt":3,"class":"timeout","error":"e","at_ms":1,"duration_ms":2,"member":"m"}]"#,
            ),
            ("orig_lane", "redrive:{acme}:lane"),
            ("orig_id", "1500-0"),
            ("class", class),
            ("error", "boom"),
            ("fingerprint", "abc"),
        ])
    }

    fn opts<'a>(m: &'a Migrations, l: &'a Limits, patch: Option<&'a Value>) -> BuildOptions<'a> {
        BuildOptions {
            patch,
            target_kind: None,
            force: false,
            operator: "ana@ops",
            migrations: m,
            limits: l,
            now_ms: 9_000,
        }
    }

    #[test]
    fn a_replay_keeps_identity_and_context_and_starts_afresh() {
        let id = DlId::parse("acme/5000-0", None).unwrap();
        let (m, l) = (Migrations::new(), Limits::default());
        let patch = json!({"simulate": "ok"});
        let Built::Ready(task, steps) = build(
            &id,
            &dead_letter("schema_mismatch"),
            &opts(&m, &l, Some(&patch)),
        ) else {
            panic!("not ready")
        };
        assert!(steps.is_empty());
        assert_eq!(task.task_id, "t-7");
        assert_eq!(task.attempt, 1, "a fresh attempt budget");
        assert_eq!(task.enqueued_at_ms, 9_000);
        assert_eq!(task.first_enqueued_at_ms, 1_000);
        assert_eq!(task.replay_of.as_deref(), Some("5000-0"));
        assert_eq!(task.replayed_by.as_deref(), Some("ana@ops"));
        assert_eq!(task.steps, ["lookup", "update"]);
        assert_eq!(task.history.len(), 1);
        assert_eq!(task.trace_id.as_deref(), Some("tr-1"));
        let payload: Value = serde_json::from_str(&task.payload).unwrap();
        assert_eq!(payload, json!({"ticket": 7, "simulate": "ok"}));
    }

    #[test]
    fn guardrails_migrations_and_routing() {
        let id = DlId::parse("acme/5000-0", None).unwrap();
        let l = Limits::default();
        let mut m = Migrations::new();
        m.register("triage", 1, 2, |mut p| {
            p["migrated"] = json!(true);
            Ok(p)
        })
        .unwrap();
        let partial = dead_letter("partial_execution");
        assert!(
            matches!(build(&id, &partial, &opts(&m, &l, None)), Built::Refused(w) if w.contains("--force"))
        );
        let mut forced = opts(&m, &l, None);
        forced.force = true;
        forced.target_kind = Some("triage_v2");
        let Built::Ready(task, steps) = build(&id, &partial, &forced) else {
            panic!("forced replay refused")
        };
        assert_eq!(steps, vec![(1, 2)]);
        assert_eq!(task.schema_version, Some(2));
        assert_eq!(task.kind, "triage_v2");
        assert!(task.payload.contains("\"migrated\":true"));
        let small = Limits {
            max_payload_bytes: 20,
        };
        assert!(
            matches!(build(&id, &dead_letter("timeout"), &opts(&m, &small, None)), Built::Invalid(w) if w.contains("limit"))
        );
        let mut failing = Migrations::new();
        failing
            .register("triage", 1, 2, |_| Err("bad shape".into()))
            .unwrap();
        assert!(
            matches!(build(&id, &dead_letter("timeout"), &opts(&failing, &l, None)), Built::Invalid(w) if w.contains("bad shape"))
        );
    }

    #[test]
    fn malformed_entries_replay_only_once_readable() {
        let id = DlId::parse("acme/5000-0", None).unwrap();
        let (m, l) = (Migrations::new(), Limits::default());
        let dl = fields(&[
            ("task_id", "t-9"),
            ("raw", r#"{"payload":"{\"a\":1}","task_id":"t-9"}"#),
            ("class", "malformed_entry"),
            ("orig_id", "1-0"),
        ]);
        assert!(
            matches!(build(&id, &dl, &opts(&m, &l, None)), Built::Invalid(w) if w.contains("missing field 'kind'"))
        );
        let mut with_kind = opts(&m, &l, None);
        with_kind.target_kind = Some("triage");
        let Built::Ready(task, _) = build(&id, &dl, &with_kind) else {
            panic!("not ready")
        };
        assert_eq!(
            (task.task_id.as_str(), task.kind.as_str()),
            ("t-9", "triage")
        );
    }

    #[test]
    fn order_is_chronological_or_per_key() {
        let s = |id: &str, key: Option<&str>, first: u64| Selected {
            id: DlId::parse(id, None).unwrap(),
            key: key.map(str::to_owned),
            first_enqueued_ms: first,
        };
        let mut items = vec![
            s("acme/30-0", Some("c2"), 3),
            s("acme/10-0", Some("c1"), 5),
            s("acme/20-0", Some("c1"), 1),
            s("acme/5-0", None, 9),
            s("beta/10-0", Some("c2"), 2),
        ];
        order(&mut items, false);
        let ids: Vec<String> = items.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "acme/5-0",
                "acme/10-0",
                "beta/10-0",
                "acme/20-0",
                "acme/30-0"
            ]
        );
        order(&mut items, true);
        let ids: Vec<String> = items.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "acme/20-0",
                "acme/10-0",
                "beta/10-0",
                "acme/30-0",
                "acme/5-0"
            ],
            "c1 first (earliest task at 1), its tasks by first enqueue; then c2; keyless last"
        );
    }
}
