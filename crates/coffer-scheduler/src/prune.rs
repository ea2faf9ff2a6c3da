//! `coffer prune`: the retention plan ([`coffer_core::retention::plan()`]) carried out in the safe
//! order, and the leftovers of backups that never finished swept.
//!
//! Each deleted backup loses its manifest first (so it is never listed with objects missing),
//! then its signature, then its objects: interrupted at any point, every listed backup is still
//! whole, and the next prune finishes what this one started. Objects under `data/ID/` with no
//! manifest are removed only once the newest of them is older than a grace period (24 h by
//! default): a backup in flight has no manifest yet, and its objects must survive a prune.

use std::collections::BTreeSet;

use coffer_core::config::Config;
use coffer_core::job::JobContext;
use std::sync::Arc;

use coffer_core::lock::LockKind;
use coffer_core::repository::{DRILL_REPORTS, Repository};
use coffer_core::retention::{self, PrunePlan};
use coffer_core::{Error, Result};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tracing::{Instrument, info, info_span, warn};

/// How old the objects of a backup without a manifest must be before a prune removes them.
pub const ORPHAN_GRACE: SignedDuration = SignedDuration::from_hours(24);

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Whether anything was deleted.
    pub dry_run: bool,
    /// Every backup, kept or deleted, with its reasons.
    pub plan: PrunePlan,
    /// Backups deleted.
    pub deleted: Vec<String>,
    /// `data/ID/` folders of backups that never got a manifest, removed (or, dry, to remove).
    pub orphans: Vec<String>,
    /// Drill reports under `[retention.drill]`, kept or deleted, oldest first.
    pub drill_reports: Vec<retention::PlanItem>,
    /// File snapshots under `[retention.files]`, kept or deleted, oldest first.
    pub snapshots: Vec<retention::PlanItem>,
    /// Configuration versions under `[retention.config]`, kept or deleted, oldest first.
    pub config_versions: Vec<retention::PlanItem>,
    /// What the prune of file-snapshot chunks did (`None` when it did not run: no snapshots
    /// and no chunks, or see `chunks_skipped`).
    pub chunks: Option<coffer_files::gc::PruneReport>,
    /// Why chunks were not pruned, when they were not although the repository holds some.
    pub chunks_skipped: Option<String>,
    /// Uploads begun more than the grace period ago and never finished (an S3 multipart upload
    /// or a folder's partial file a killed writer left), aborted (or, dry, to abort).
    pub abandoned_uploads: Vec<coffer_core::storage::AbandonedUpload>,
}

/// Plans the prune at the job clock's now and, unless `dry_run`, carries it out under the
/// repository's exclusive lock (waiting at most `lock_wait` for it; exit 7 naming the holders
/// when it is not free by then). The plan is made once the lock is held, so no backup that
/// finished meanwhile is judged on a stale listing.
pub async fn run_prune(
    config: &Config,
    repository: &Arc<Repository>,
    job: &JobContext,
    dry_run: bool,
    lock_wait: std::time::Duration,
    identity: Option<&age::x25519::Identity>,
) -> Result<PruneReport> {
    let span = info_span!("prune", dry_run);
    async {
        let guard = if dry_run {
            None
        } else {
            Some(
                coffer_core::lock::acquire(
                    repository,
                    LockKind::Exclusive,
                    "prune",
                    lock_wait,
                    &job.clock,
                    &job.cancel,
                )
                .await?,
            )
        };
        let result = prune(config, repository, job, dry_run, guard.as_ref(), identity).await;
        if let Some(guard) = guard {
            // A lock lost half-way says so rather than "interrupted".
            let lost = guard.check();
            if let Err(e) = guard.release().await {
                warn!(error = %e, "releasing the prune lock");
            }
            lost?;
        }
        result
    }
    .instrument(span)
    .await
}

async fn prune(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    dry_run: bool,
    guard: Option<&coffer_core::lock::LockGuard>,
    identity: Option<&age::x25519::Identity>,
) -> Result<PruneReport> {
    // Before each deletion: stopped, or the lock lost (someone broke it), means stop here.
    let go_on = || -> Result<()> {
        job.cancel.check()?;
        guard.map_or(Ok(()), |g| g.check())
    };
    let now = job.clock.now();
    let manifests = repository.list().await?;
    let pins = retention::pins::pins(repository).await?;
    let plan = retention::plan(&manifests, &config.retention, &pins, now, &config.timezone);
    let known: BTreeSet<&str> = manifests.iter().map(|m| m.id.as_str()).collect();
    let orphans = orphans(repository, &known, now).await?;
    let drill_reports = drill_reports(repository, config, now).await?;
    let abandoned_uploads = repository
        .storage()
        .abandoned_uploads(grace_cutoff(now)?)
        .await?;
    let snapshots = coffer_files::snapshot::list(repository).await?;
    let snapshot_plan = plan_snapshots(&snapshots, config, &pins, now);
    let versions = coffer_config_history::read::all_versions(repository).await?;
    let version_plan = plan_config_versions(&versions, config, &pins, now);
    let mut report = PruneReport {
        abandoned_uploads,
        snapshots: snapshot_plan,
        config_versions: version_plan,
        chunks: None,
        chunks_skipped: None,
        dry_run,
        deleted: Vec::new(),
        orphans: orphans.clone(),
        plan,
        drill_reports,
    };
    let kept_snapshots: Vec<coffer_files::tree::SnapshotSummary> = snapshots
        .iter()
        .filter(|s| report.snapshots.iter().any(|i| i.keep && i.id == s.id))
        .map(|s| s.snapshot.clone())
        .collect();
    // Configuration versions keep their contents in the same packs.
    let mut kept_by_versions = Vec::new();
    for version in versions.iter().filter(|v| {
        report
            .config_versions
            .iter()
            .any(|i| i.keep && i.id == v.id)
    }) {
        for file in &version.files {
            kept_by_versions.extend(file.chunk_ids()?);
        }
    }
    let kept = Kept {
        snapshots: &kept_snapshots,
        chunks: &kept_by_versions,
    };
    if dry_run {
        (report.chunks, report.chunks_skipped) =
            prune_chunks(config, repository, &kept, now, true, identity).await?;
        return Ok(report);
    }
    for id in report.plan.deletions() {
        go_on()?;
        repository.remove_backup(id).await?;
        info!(id, "backup deleted");
        report.deleted.push(id.to_string());
    }
    for item in report.snapshots.iter().filter(|r| !r.keep) {
        go_on()?;
        coffer_files::snapshot::remove(repository, &item.id).await?;
        info!(id = %item.id, "file snapshot deleted");
    }
    for item in report.config_versions.iter().filter(|r| !r.keep) {
        go_on()?;
        let version = versions
            .iter()
            .find(|v| v.id == item.id)
            .expect("planned from these versions");
        coffer_config_history::version::remove(repository, &version.name, &version.id).await?;
        info!(id = %item.id, table = %version.name, "configuration version deleted");
    }
    // After the snapshots retention dropped are gone: their chunks are garbage now.
    go_on()?;
    (report.chunks, report.chunks_skipped) =
        prune_chunks(config, repository, &kept, now, false, identity).await?;
    for id in &orphans {
        go_on()?;
        let removed = repository.remove_data(id).await?;
        info!(
            id,
            objects = removed.len(),
            "leftovers of an unfinished backup removed"
        );
    }
    for upload in &report.abandoned_uploads {
        go_on()?;
        repository.storage().abort_upload(upload).await?;
        info!(key = %upload.key, started = ?upload.started, "abandoned upload aborted");
    }
    for item in report.drill_reports.iter().filter(|r| !r.keep) {
        go_on()?;
        // The JSON first: `drill history` reads it, and a Markdown copy alone is ignored.
        for suffix in [".json", ".json.minisig", ".md", ".md.minisig"] {
            let key = format!("{DRILL_REPORTS}{}{suffix}", item.id);
            repository.storage().delete(&key).await?;
        }
        info!(id = %item.id, "drill report deleted");
    }
    info!(
        deleted = report.deleted.len(),
        kept = report.plan.items.len() - report.deleted.len(),
        orphans = orphans.len(),
        abandoned_uploads = report.abandoned_uploads.len(),
        "prune finished"
    );
    Ok(report)
}

/// What chunks stay referenced: the listings of the kept snapshots, and the chunks of the kept
/// configuration versions.
struct Kept<'a> {
    snapshots: &'a [coffer_files::tree::SnapshotSummary],
    chunks: &'a [coffer_files::chunk_id::ChunkId],
}

/// Prunes the chunks no kept snapshot or configuration version references
/// ([`coffer_files::gc`]), when the repository holds any. An encrypted repository's listings
/// need its identity: without one the chunks are left for a prune that has it, and the report
/// says so.
async fn prune_chunks(
    config: &Config,
    repository: &Repository,
    kept: &Kept<'_>,
    now: Timestamp,
    dry_run: bool,
    identity: Option<&age::x25519::Identity>,
) -> Result<(Option<coffer_files::gc::PruneReport>, Option<String>)> {
    let storage = repository.storage();
    if kept.snapshots.is_empty()
        && kept.chunks.is_empty()
        && storage.list(coffer_files::index::INDEX).await?.is_empty()
    {
        return Ok((None, None));
    }
    let recipient = config.repository.recipient()?;
    if recipient.is_some() && identity.is_none() {
        let why = "the repository is encrypted: file-snapshot chunks are pruned only with its \
                   identity (coffer prune --identity-file)";
        warn!("{why}");
        return Ok((None, Some(why.to_string())));
    }
    let store = coffer_files::store::ChunkStore::open_for_reading(
        storage,
        &config.persistent_state_dir()?,
        recipient,
        identity.cloned(),
    )
    .await?;
    let options = coffer_files::gc::PruneOptions {
        dry_run,
        ..Default::default()
    };
    let report = coffer_files::gc::prune_chunks_also_keeping(
        &store,
        kept.snapshots,
        kept.chunks,
        now,
        &options,
    )
    .await?;
    Ok((Some(report), None))
}

/// Ids under `data/` with no manifest whose newest object is older than [`ORPHAN_GRACE`].
async fn orphans(
    repository: &Repository,
    known: &BTreeSet<&str>,
    now: Timestamp,
) -> Result<Vec<String>> {
    let mut newest: std::collections::BTreeMap<String, Option<Timestamp>> = Default::default();
    for object in repository.storage().list("data/").await? {
        let Some((id, _)) = object
            .key
            .strip_prefix("data/")
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        if known.contains(id) || !coffer_core::manifest::is_valid_backup_id(id) {
            continue;
        }
        let entry = newest.entry(id.to_string()).or_insert(object.last_modified);
        *entry = match (*entry, object.last_modified) {
            (Some(a), Some(b)) => Some(a.max(b)),
            // A backend that does not say when: never old enough to remove.
            _ => None,
        };
    }
    let cutoff = grace_cutoff(now)?;
    let mut old = Vec::new();
    for (id, at) in newest {
        match at {
            Some(at) if at < cutoff => old.push(id),
            Some(_) => {}
            None => warn!(
                id,
                "objects without a manifest and without a modification time are left alone"
            ),
        }
    }
    Ok(old)
}

/// What began before this is old enough to be a leftover rather than work in flight.
fn grace_cutoff(now: Timestamp) -> Result<Timestamp> {
    now.checked_sub(ORPHAN_GRACE)
        .map_err(|e| Error::other(format!("grace period before {now}: {e}")))
}

/// Every drill report, judged by `[retention.drill]` on the time in its id; the newest is kept
/// whatever the rule says (the last proof the backups restore).
async fn drill_reports(
    repository: &Repository,
    config: &Config,
    now: Timestamp,
) -> Result<Vec<retention::PlanItem>> {
    let mut reports: Vec<(String, Timestamp)> = Vec::new();
    for object in repository.storage().list(DRILL_REPORTS).await? {
        let Some(id) = object
            .key
            .strip_prefix(DRILL_REPORTS)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        // `20261201T020000Z-drill-ab12`: the time is the id's first part.
        let at = id
            .split('-')
            .next()
            .and_then(|stamp| jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok())
            .and_then(|civil| civil.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
            .or(object.last_modified);
        if let Some(at) = at {
            reports.push((id.to_string(), at));
        }
    }
    reports.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let times: Vec<Timestamp> = reports.iter().map(|r| r.1).collect();
    let decided = config.retention.drill.decide(&times, now, &config.timezone);
    let last = reports.len().saturating_sub(1);
    Ok(reports
        .into_iter()
        .zip(decided)
        .enumerate()
        .map(|(i, ((id, at), why))| {
            let mut reasons: Vec<String> = why
                .into_iter()
                .map(|w| format!("[retention.drill] {w}"))
                .collect();
            if i == last {
                reasons.push("the newest drill report".into());
            }
            let keep = !reasons.is_empty();
            if !keep {
                reasons.push(format!(
                    "not kept by [retention.drill] ({})",
                    retention::plan::describe(&config.retention.drill)
                ));
            }
            retention::PlanItem {
                id,
                kind: "drill".into(),
                started_at: at,
                keep,
                reasons,
            }
        })
        .collect())
}

/// Every file snapshot judged by `[retention.files]`, one source at a time; the newest snapshot
/// of each source is kept whatever the rule says (the last copy of those files).
fn plan_snapshots(
    snapshots: &[coffer_files::snapshot::SnapshotManifest],
    config: &Config,
    pins: &[retention::Pin],
    now: Timestamp,
) -> Vec<retention::PlanItem> {
    let dated: Vec<Dated<'_>> = snapshots
        .iter()
        .map(|s| Dated {
            group: &s.source,
            id: &s.id,
            at: s.started_at,
        })
        .collect();
    let rules = Rules {
        policy: &config.retention.files,
        section: "[retention.files]",
        kind: "files",
        newest: "the newest snapshot of",
    };
    plan_grouped(&dated, &rules, config, pins, now)
}

/// Configuration versions under `[retention.config]`, kept or deleted, oldest first; the
/// newest version of each table is always kept (it records every file of the table).
fn plan_config_versions(
    versions: &[coffer_config_history::version::Version],
    config: &Config,
    pins: &[retention::Pin],
    now: Timestamp,
) -> Vec<retention::PlanItem> {
    let dated: Vec<Dated<'_>> = versions
        .iter()
        .map(|v| Dated {
            group: &v.name,
            id: &v.id,
            at: v.created_at,
        })
        .collect();
    let rules = Rules {
        policy: &config.retention.config,
        section: "[retention.config]",
        kind: "config",
        newest: "the newest version of",
    };
    plan_grouped(&dated, &rules, config, pins, now)
}

/// One record retention decides on: a snapshot of a source, a version of a table.
struct Dated<'a> {
    group: &'a str,
    id: &'a str,
    at: Timestamp,
}

/// How one kind of record is retained, and how its reasons read.
struct Rules<'a> {
    policy: &'a retention::Policy,
    section: &'a str,
    kind: &'a str,
    /// "the newest snapshot of": the reason the newest of each group is kept whatever the policy.
    newest: &'a str,
}

/// The policy applied to each group on its own (records oldest first, as listed), the newest of
/// each group and every pinned record always kept; items oldest first.
fn plan_grouped(
    records: &[Dated<'_>],
    rules: &Rules<'_>,
    config: &Config,
    pins: &[retention::Pin],
    now: Timestamp,
) -> Vec<retention::PlanItem> {
    let groups: BTreeSet<&str> = records.iter().map(|r| r.group).collect();
    let mut items = Vec::new();
    for group in groups {
        let mut of_group: Vec<&Dated<'_>> = records.iter().filter(|r| r.group == group).collect();
        of_group.sort_by_key(|r| (r.at, r.id));
        let times: Vec<Timestamp> = of_group.iter().map(|r| r.at).collect();
        let decided = rules.policy.decide(&times, now, &config.timezone);
        let last = of_group.len().saturating_sub(1);
        for (i, (record, why)) in of_group.into_iter().zip(decided).enumerate() {
            let mut reasons: Vec<String> = why
                .into_iter()
                .map(|w| format!("{} {w}", rules.section))
                .collect();
            if i == last {
                reasons.push(format!("{} {group}", rules.newest));
            }
            for pin in pins.iter().filter(|p| p.id == record.id) {
                reasons.push(format!("pinned: {}", pin.reason));
            }
            let keep = !reasons.is_empty();
            if !keep {
                reasons.push(format!(
                    "not kept by {} ({})",
                    rules.section,
                    retention::plan::describe(rules.policy)
                ));
            }
            items.push(retention::PlanItem {
                id: record.id.to_string(),
                kind: rules.kind.into(),
                started_at: record.at,
                keep,
                reasons,
            });
        }
    }
    items.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    items
}
