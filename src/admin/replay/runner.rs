//! The replay job runner: a replay command runs as a **job** whose spec and progress live in
//! Redis (`redrive:{@admin}:job:<id>`, a [`JobRecord`]).
//!
//! The selection is pinned at the start (a filter without `--until` gets the start time, so
//! tasks that fail again after their replay are not replayed again by the same job), entries
//! are replayed in bounded atomic steps (scripts/replay.lua deletes each dead letter and appends
//! its task in one step, and skips dead letters already gone), progress is saved after each
//! step, a cancel request is read after each step, and a resumed job recomputes what is left:
//! the entries it replayed are gone from the dead letters, so nothing is replayed twice.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::build::{build, build_options, Built, Selected};
use super::job::{field as job_field, JobCounts, JobRecord, JobState};
use super::selection::{by_tenant, select};
use crate::admin::context::{AdminContext, Executed};
use crate::admin::scan::pin;
use crate::admin::select::{DlId, Selection};
use crate::admin::{Envelope, ReplaySpec};
use crate::broker::ReplayItem;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// The details a replay result carries: the job's counters and samples.
fn details(job: &str, record: &JobRecord, samples: &Samples) -> Value {
    json!({
        "job": job,
        "state": record.state_str(),
        "selected": record.selected,
        "replayed": record.counts.replayed,
        "skipped": record.counts.skipped,
        "refused": record.counts.refused,
        "invalid": record.counts.invalid,
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
    let record = JobRecord::from_fields(&fields);
    let mut d = details(&job, &record, &samples);
    match result {
        Ok(Step::Interrupted) => Executed::Interrupted,
        Ok(Step::Done) => {
            let _ = ctx.broker.job_expire(&job, ctx.settings.record_ttl).await;
            d["state"] = json!(JobState::Done.as_str());
            let message = summary(&job, &record, &spec);
            match single_failure(&spec, &record, &samples) {
                Some(e) => Executed::finished(Err(e), d),
                None => Executed::finished(Ok(message), d),
            }
        }
        Ok(Step::Cancelled(by)) => {
            d["state"] = json!(JobState::Cancelled.as_str());
            let message = format!(
                "replay job {job} cancelled (by command {by}) after {} of {} dead letters; nothing \
                 is replayed twice on resume: redrive dlq replay --resume {job} --reason ...",
                record.counts.replayed + record.counts.skipped,
                record.selected
            );
            Executed::finished(Err(Error::Interrupted(message)), d)
        }
        Err(e) => {
            let _ = ctx
                .broker
                .job_set(&job, &JobRecord::failed(e.to_string()), &[])
                .await;
            d["state"] = json!(JobState::Failed.as_str());
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
fn single_failure(spec: &ReplaySpec, record: &JobRecord, samples: &Samples) -> Option<Error> {
    if !matches!(spec.select, Some(Selection::Ids(_))) || record.counts.replayed > 0 {
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

fn summary(job: &str, record: &JobRecord, spec: &ReplaySpec) -> String {
    let mut m = format!(
        "replayed {} of {} dead letters",
        record.counts.replayed, record.selected
    );
    let JobCounts {
        skipped,
        refused,
        invalid,
        ..
    } = record.counts;
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
    let running = |job: &str, member: &str| JobRecord::running(job, &env.id, member, now);
    if let Some(job) = &spec.resume {
        let Some(fields) = b.job_get(job).await? else {
            return Err(Error::NotFound(format!(
                "no replay job '{job}' (finished jobs are kept for admin.record_ttl_ms)"
            )));
        };
        let record = JobRecord::from_fields(&fields);
        let mut stored = record.spec(job)?;
        if record.state == Some(JobState::Done) {
            return Ok(Started::Nothing(
                format!("replay job {job} had already finished; nothing left to resume"),
                details(job, &record, &Samples::default()),
            ));
        }
        let fresh =
            now.saturating_sub(record.updated_at) < ctx.settings.claim_idle.as_millis() as u64;
        if record.state == Some(JobState::Running)
            && fresh
            && record.command.as_ref() != Some(&env.id)
        {
            return Err(Error::Refused(format!(
                "replay job {job} is running on {} (command {}); cancel it first with `redrive dlq cancel {job}`",
                record.member.as_deref().unwrap_or("?"),
                record.command.as_deref().unwrap_or("?"),
            )));
        }
        stored.rate = spec.rate;
        b.job_set(job, &running(job, &ctx.executor), &[job_field::CANCEL])
            .await?;
        tracing::info!(job = %job, command_id = %env.id, "resuming replay job");
        return Ok(Started::Go(job.clone(), Box::new(stored), None));
    }
    let job = env.id.clone();
    if let Some(fields) = b.job_get(&job).await? {
        // This command started the job already and was taken over (its member died): carry on
        // with the stored spec.
        let record = JobRecord::from_fields(&fields);
        let stored = record.spec(&job)?;
        // Its member may have died right after the job ended: the recorded end stands.
        match record.state {
            Some(JobState::Done) => {
                return Ok(Started::Nothing(
                    summary(&job, &record, &stored),
                    details(&job, &record, &Samples::default()),
                ))
            }
            Some(JobState::Cancelled) => {
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
    if let Some(Selection::Ids(listed)) = &pinned.select {
        // Listed ids are all or nothing: any that a guardrail refuses or that cannot be
        // replayed stops the command before anything changes (a fold's members, taken along
        // by its representative, are counted like a filter's matches instead).
        let opts = build_options(ctx, &pinned, &env.operator, now);
        let listed: std::collections::HashSet<&DlId> = listed.iter().collect();
        let ids: Vec<DlId> = items
            .iter()
            .map(|s| s.id.clone())
            .filter(|d| listed.contains(d))
            .collect();
        for (tenant, group) in by_tenant(&ids) {
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
    fields.extend(JobRecord::started(
        spec_json,
        items.len(),
        &env.operator,
        &env.reason,
        now,
    ));
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
    if let Some(by) = b
        .job_get(job)
        .await?
        .and_then(|j| JobRecord::from_fields(&j).cancel)
    {
        b.job_set(job, &JobState::Cancelled.fields(), &[job_field::CANCEL])
            .await?;
        return Ok(Step::Cancelled(by));
    }
    for part in items.chunks(chunk) {
        if stop.is_triggered() {
            b.job_set(job, &JobState::Interrupted.fields(), &[]).await?;
            return Ok(Step::Interrupted);
        }
        let now = crate::task::now_ms();
        let opts = build_options(ctx, spec, &env.operator, now);
        let minute = now / 60_000;
        let mut counts = JobCounts::default();
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
                    Built::Ready(task, _) => ready.push(ReplayItem {
                        dlq_id: s.id.id.clone(),
                        task_id: crate::task::validate_task_id(&task.task_id)
                            .is_ok()
                            .then(|| task.task_id.clone()),
                        kind: task.kind.clone(),
                        fields: task.to_fields(),
                    }),
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
            let (results, written) = b
                .replay(
                    &tenant,
                    minute,
                    crate::broker::STATS_KEEP,
                    ctx.tasks.enabled,
                    &ready,
                )
                .await?;
            events::task_records::written(&tenant, "replayed", written);
            let replayed = results.iter().filter(|r| r.is_some()).count() as u64;
            counts.replayed += replayed;
            counts.skipped += results.len() as u64 - replayed;
            if replayed > 0 {
                events::admin::dlq_replayed(&tenant, replayed);
            }
            i = j;
        }
        done += part.len() as u64;
        let cancel = b
            .job_progress(
                job,
                &counts.increments(),
                &JobRecord::progressed(crate::task::now_ms(), &ctx.executor),
            )
            .await?;
        if let Some(by) = cancel {
            b.job_set(job, &JobState::Cancelled.fields(), &[job_field::CANCEL])
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
    b.job_set(job, &JobState::Done.fields(), &[]).await?;
    Ok(Step::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_and_summary_read_the_typed_record() {
        let fields = [
            ("state", "done"),
            ("selected", "5"),
            ("replayed", "2"),
            ("skipped", "1"),
            ("refused", "1"),
            ("invalid", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let record = JobRecord::from_fields(&fields);
        let samples = Samples {
            refused: vec!["r".into()],
            invalid: vec![],
        };
        assert_eq!(
            details("j1", &record, &samples).to_string(),
            r#"{"invalid":1,"invalid_sample":[],"job":"j1","refused":1,"refused_sample":["r"],"replayed":2,"selected":5,"skipped":1,"state":"done"}"#
        );
        assert_eq!(
            details("j1", &JobRecord::default(), &Samples::default())["state"],
            ""
        );
        let spec = ReplaySpec {
            order_by_key: Some("user".into()),
            ..Default::default()
        };
        assert_eq!(
            summary("j1", &record, &spec),
            "replayed 2 of 5 dead letters, 1 already gone (replayed or removed by someone else), \
             1 partial_execution refused (review them, then replay with --force), 1 not \
             replayable as they are, ordered by payload field 'user' [job j1]"
        );
    }
}
