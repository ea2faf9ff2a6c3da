//! The repository lock: who may change the repository while others read or add to it.
//!
//! After restic's design: every process that works on the repository stores a small lock object
//! `locks/ID.json` ([`LockRecord`]: host, pid, kind, purpose, created, heartbeat) for as long as
//! it works. A lock is [`LockKind::Shared`] (backups, restores, verify, drills: any number at
//! once) or [`LockKind::Exclusive`] (prune: alone). The holder rewrites its object with a new
//! heartbeat every minute ([`DEFAULT_REFRESH_EVERY`]); a lock whose heartbeat is older than
//! `stale_after` ([`DEFAULT_STALE_AFTER`], 30 minutes), or whose process is gone from this host,
//! is **stale**: the next [`acquire`] removes it ("takes it over") with a warning naming it, and
//! `coffer lock break --stale` removes it by hand.
//!
//! # Getting a lock without conditional writes
//!
//! Some S3 servers (Garage) ignore `If-None-Match`, so a lock cannot be a create-if-absent of one
//! well-known key. [`acquire`] relies only on plain PUT, LIST and DELETE, each of which is
//! linearizable (read-after-write and list-after-write consistent, as AWS S3, Garage, s3s-fs and a
//! local folder are), and on clocks that agree to well within `stale_after`:
//!
//! 1. write our own object under a new, random id;
//! 2. list `locks/` (this listing starts after our write completed) and read every lock;
//! 3. remove the stale ones (logging each);
//! 4. if no live lock that conflicts with ours is listed (exclusive conflicts with every lock,
//!    shared with exclusive ones; an unreadable lock counts as exclusive), **we hold the lock**;
//! 5. otherwise order every contender by `(created, id)`: if some conflicting lock comes before
//!    ours we **withdraw** (delete our object, and later write a new one under a new id); if ours
//!    comes first we keep it and wait. Either way we sleep (backoff with jitter) and go back to 1
//!    (or 2 when our object is still there), until `wait` runs out: then our object is deleted and
//!    the error ([`ErrorKind::Locked`], exit 7) names the holders.
//!
//! **At most one winner.** Suppose conflicting lockers X and Y both won. Each won on a listing
//! that started after its own write had completed and showed no object of the other. X's listing
//! did not show Y's object, so Y's write completed after X's listing began (a winner never deletes
//! its object before it releases, and a withdrawn object never wins: a retry writes a new one,
//! which is the one that counts). Then Y's listing began after Y's write, hence after X's
//! listing, hence after X's write completed: it shows X's object. Contradiction. Of two lockers
//! racing, at least one sees the other.
//!
//! **Someone wins.** Step 4 alone is restic's rule, which is safe but can leave both racers
//! backing off. Step 5 makes the outcome deterministic: everyone orders contenders the same way,
//! so among racers that see each other the first by `(created, id)` keeps its object and every
//! later one withdraws; the first then wins on a listing made after they withdrew (their retries
//! write new, later objects, which withdraw again and exist only briefly). A later
//! racer that saw nobody (its listing came before the first one's write) has already won, and
//! the first waits for it like for any holder. Nobody waits for someone who waits for them: only
//! the first of a set keeps waiting, and a holder never waits. There is no fairness beyond that:
//! a prune that waits for running backups withdraws and retries, so backups that keep overlapping
//! can keep it out until its wait runs out (exit 7; it runs at the next schedule).
//!
//! **What the holder must notice.** A lock only protects while others see it live. The guard's
//! refresh first reads its object back: when it is gone (broken by hand, or taken over as stale)
//! the guard does not write it again but reports the lock lost; when the last stored heartbeat is
//! already `stale_after` old (the process was suspended) it is lost too, since someone may have
//! taken it over; and when refreshing keeps failing for `stale_after / 2` it is lost before others
//! may call it stale. A lost lock cancels [`LockGuard::cancel`] and [`LockGuard::check`] fails
//! with [`ErrorKind::Locked`], so a job run under the guard's `Cancel` ([`LockGuard::job`])
//! stops. Such a job fails with the cancellation's error (`Interrupted`); its caller should
//! report it as [`ErrorKind::Locked`] instead, so the command exits 7 and says the lock was lost:
//! [`LockGuard::finish`] does that, and releases the lock.
//!
//! **Assumptions and limits.** Host identity is the host name (containers sharing one must not
//! share a repository under the same name); a pid reused by another process on the same host
//! keeps a dead lock live until its heartbeat is stale; clocks of different hosts must agree to
//! well within `stale_after` minus the refresh interval; a process killed outright leaves its
//! object, stale at once for processes on the same host and after `stale_after` for others.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cancel::{Cancel, Reason};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::job::JobContext;
use crate::repository::Repository;

/// The folder lock objects live in.
pub const LOCKS: &str = "locks/";
/// How old a heartbeat may be before its lock is stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its heartbeat.
pub const DEFAULT_REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Backups, restores, verify, drills: any number at once, never alongside an exclusive lock.
    Shared,
    /// Prune: alone.
    Exclusive,
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        })
    }
}

/// The content of `locks/ID.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The lock's id, the `ID` of its key.
    pub id: String,
    /// Shared or exclusive.
    pub kind: LockKind,
    /// What the holder does (`backup full`, `prune`).
    pub purpose: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id on that host.
    pub pid: u32,
    /// When the object was first written.
    pub created: Timestamp,
    /// When the holder last rewrote it.
    pub heartbeat: Timestamp,
    /// `coffer VERSION`.
    #[serde(default)]
    pub created_by: String,
}

/// Timing of locks; [`Default`] is what coffer uses.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// A heartbeat older than this is stale.
    pub stale_after: Duration,
    /// How often the holder rewrites its heartbeat (and a waiter its object).
    pub refresh_every: Duration,
    /// The first pause between attempts; it doubles up to `retry_max`, with jitter.
    pub retry_min: Duration,
    /// The longest pause between attempts.
    pub retry_max: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            stale_after: DEFAULT_STALE_AFTER,
            refresh_every: DEFAULT_REFRESH_EVERY,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// One object found under `locks/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    /// The `ID` of `locks/ID.json`.
    pub id: String,
    /// Its key.
    pub key: String,
    /// What it says; `None` when it cannot be read as a lock (see `problem`).
    pub record: Option<LockRecord>,
    /// Why it cannot be read.
    pub problem: Option<String>,
    /// When the storage says it was last written.
    pub last_modified: Option<Timestamp>,
    /// Why it is stale; `None` for a live lock.
    pub stale: Option<String>,
}

impl LockEntry {
    /// Whether it is stale (taken over by the next locker).
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }

    /// Its kind; an unreadable lock counts as exclusive.
    pub fn kind(&self) -> LockKind {
        self.record.as_ref().map_or(LockKind::Exclusive, |r| r.kind)
    }

    /// The order contenders are resolved in: `(created, id)`; unreadable ones first.
    fn order(&self) -> (Option<Timestamp>, &str) {
        (self.record.as_ref().map(|r| r.created), &self.id)
    }

    /// `exclusive lock ID (prune) of HOST pid PID, 3 min old, heartbeat 20 s ago`.
    pub fn describe(&self, now: Timestamp) -> String {
        match &self.record {
            Some(r) => format!(
                "{} lock {} ({}) of {} pid {}, {} old, heartbeat {} ago",
                r.kind,
                self.id,
                r.purpose,
                r.host,
                r.pid,
                human(now.duration_since(r.created)),
                human(now.duration_since(r.heartbeat)),
            ),
            None => format!(
                "unreadable lock {} ({})",
                self.id,
                self.problem.as_deref().unwrap_or("unreadable")
            ),
        }
    }
}

/// What `break_lock` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakTarget<'a> {
    /// The lock of this id (a live one only with `force`).
    Id(&'a str),
    /// Every stale lock.
    AllStale,
}

/// Gets a lock of `kind` for `purpose` (`backup full`), waiting up to `wait` for conflicting
/// holders, with the default [`LockOptions`]. See the module docs for how.
pub async fn acquire(
    repository: &Arc<Repository>,
    kind: LockKind,
    purpose: &str,
    wait: Duration,
    clock: &Clock,
    cancel: &Cancel,
) -> Result<LockGuard> {
    acquire_with(
        repository,
        kind,
        purpose,
        wait,
        clock,
        cancel,
        &LockOptions::default(),
    )
    .await
}

/// [`acquire`] with explicit timing.
pub async fn acquire_with(
    repository: &Arc<Repository>,
    kind: LockKind,
    purpose: &str,
    wait: Duration,
    clock: &Clock,
    cancel: &Cancel,
    options: &LockOptions,
) -> Result<LockGuard> {
    let storage = repository.storage();
    let host = host_name();
    let deadline = tokio::time::Instant::now() + wait;
    let mut own: Option<LockRecord> = None;
    let mut attempt: u32 = 0;
    let mut said_waiting = false;
    loop {
        if let Err(e) = cancel.check() {
            withdraw(repository, own.take()).await;
            return Err(e);
        }
        let record = match own.take() {
            Some(mut record) => {
                // A waiter's object must not go stale while it waits.
                let now = clock.now();
                if now.duration_since(record.heartbeat) >= signed(options.refresh_every) {
                    record.heartbeat = now;
                    if let Err(e) = write(repository, &record).await {
                        withdraw(repository, Some(record)).await;
                        return Err(e);
                    }
                }
                record
            }
            None => {
                let now = clock.now();
                let record = LockRecord {
                    id: new_id(now),
                    kind,
                    purpose: purpose.to_string(),
                    host: host.clone(),
                    pid: std::process::id(),
                    created: now,
                    heartbeat: now,
                    created_by: format!("coffer {}", env!("CARGO_PKG_VERSION")),
                };
                write(repository, &record).await?;
                record
            }
        };
        let entries = match scan(repository, clock.now(), options.stale_after, &host).await {
            Ok(entries) => entries,
            Err(e) => {
                withdraw(repository, Some(record)).await;
                return Err(e);
            }
        };
        let mut seen_own = false;
        let mut conflicts = Vec::new();
        for entry in entries {
            if entry.id == record.id {
                seen_own = true;
                continue;
            }
            if let Some(why) = &entry.stale {
                tracing::warn!("taking over stale {}: {why}", entry.describe(clock.now()));
                if let Err(e) = storage.delete(&entry.key).await {
                    withdraw(repository, Some(record)).await;
                    return Err(e.context(format!("removing stale lock {}", entry.id)));
                }
                continue;
            }
            if kind == LockKind::Exclusive || entry.kind() == LockKind::Exclusive {
                conflicts.push(entry);
            }
        }
        if seen_own && conflicts.is_empty() {
            tracing::debug!(id = %record.id, %kind, purpose, "repository lock obtained");
            return Ok(LockGuard::start(
                repository.clone(),
                record,
                clock.clone(),
                cancel,
                options.clone(),
            ));
        }
        // Our own object missing from a listing that began after it was written: a listing that
        // is not consistent, or someone broke it already. Never win on such a listing.
        let first = seen_own
            && conflicts
                .iter()
                .all(|c| (Some(record.created), record.id.as_str()) < c.order());
        let keep = if first {
            Some(record)
        } else {
            withdraw(repository, Some(record)).await;
            None
        };
        if tokio::time::Instant::now() >= deadline && (attempt > 0 || keep.is_none()) {
            withdraw(repository, keep).await;
            return Err(not_obtained(kind, purpose, wait, &conflicts, clock.now()));
        }
        // Once per acquire, so a job that waits says for whom (the daemon's log, `--lock-wait`).
        if !said_waiting && !conflicts.is_empty() {
            said_waiting = true;
            let now = clock.now();
            let holders: Vec<String> = conflicts.iter().map(|c| c.describe(now)).collect();
            tracing::info!(
                %kind,
                purpose,
                "waiting up to {} for the repository lock, held by {}",
                human(signed(wait)),
                holders.join("; ")
            );
        }
        // Past the deadline only the first contender gets here, for one more look: long enough
        // for the later ones it saw to withdraw.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let pause = if left.is_zero() {
            options.retry_min
        } else {
            backoff(options, attempt).min(left)
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
        }
        own = keep;
        attempt = attempt.saturating_add(1);
    }
}

/// Every object under `locks/`, oldest first, each with whether it is stale (by `clock` and
/// `stale_after`, and for locks of this host whether their process runs).
pub async fn list(
    repository: &Repository,
    clock: &Clock,
    stale_after: Duration,
) -> Result<Vec<LockEntry>> {
    repository.check_marker().await?;
    scan(repository, clock.now(), stale_after, &host_name()).await
}

/// Removes the lock `id` (refusing a live one unless `force`) or every stale lock; returns what
/// was removed, each logged as a warning.
pub async fn break_lock(
    repository: &Repository,
    target: BreakTarget<'_>,
    force: bool,
    clock: &Clock,
    stale_after: Duration,
) -> Result<Vec<LockEntry>> {
    if let BreakTarget::Id(id) = target
        && !is_valid_lock_id(id)
    {
        return Err(Error::config(format!("{id:?} is not a lock id")));
    }
    let entries = list(repository, clock, stale_after).await?;
    let now = clock.now();
    let doomed: Vec<LockEntry> = match target {
        BreakTarget::AllStale => entries.into_iter().filter(LockEntry::is_stale).collect(),
        BreakTarget::Id(id) => {
            let entry = entries.into_iter().find(|e| e.id == id).ok_or_else(|| {
                Error::not_found(format!(
                    "no lock {id} in {}",
                    repository.storage().location()
                ))
            })?;
            if !entry.is_stale() && !force {
                return Err(Error::refused(format!(
                    "breaking {}: it is live, and removing it would let a conflicting job (prune \
                     beside a backup) run; add --force once you know its holder is gone",
                    entry.describe(now)
                )));
            }
            vec![entry]
        }
    };
    for entry in &doomed {
        repository
            .storage()
            .delete(&entry.key)
            .await
            .map_err(|e| e.context(format!("removing lock {}", entry.id)))?;
        match &entry.stale {
            Some(why) => tracing::warn!("removed stale {}: {why}", entry.describe(now)),
            None => tracing::warn!("removed live {} (--force)", entry.describe(now)),
        }
    }
    Ok(doomed)
}

/// Whether `id` can name a lock: 1 to 64 characters of `A–Z a–z 0–9 -`.
pub fn is_valid_lock_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The key of lock `id`.
pub fn lock_key(id: &str) -> String {
    format!("{LOCKS}{id}.json")
}

/// A lock held: its heartbeat is refreshed in the background until [`LockGuard::release`] (or,
/// best effort, drop).
#[derive(Debug)]
pub struct LockGuard {
    record: LockRecord,
    repository: Arc<Repository>,
    cancel: Cancel,
    lost: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl LockGuard {
    fn start(
        repository: Arc<Repository>,
        record: LockRecord,
        clock: Clock,
        parent: &Cancel,
        options: LockOptions,
    ) -> Self {
        let cancel = parent.child();
        let lost = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let task = tokio::spawn(refresh_loop(Refresher {
            repository: repository.clone(),
            record: record.clone(),
            clock,
            options,
            stop: stop.clone(),
            lost: lost.clone(),
            cancel: cancel.clone(),
        }));
        Self {
            record,
            repository,
            cancel,
            lost,
            stop,
            task: Some(task),
        }
    }

    /// The lock's id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The record as first written.
    pub fn record(&self) -> &LockRecord {
        &self.record
    }

    /// A child of the `Cancel` given to [`acquire`], cancelled when the lock is lost: run the
    /// job under it.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Why the lock was lost, once it was.
    pub fn lost(&self) -> Option<String> {
        lock(&self.lost).clone()
    }

    /// An [`ErrorKind::Locked`] error once the lock is lost: ask before each destructive step.
    pub fn check(&self) -> Result<()> {
        match self.lost() {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::Locked,
                format!("the repository lock {} was lost: {why}", self.record.id),
            )),
        }
    }

    /// The context to run the locked work in: `job`'s clock, and [`LockGuard::cancel`], so the
    /// work stops when `job` is cancelled or the lock is lost.
    pub fn job(&self, job: &JobContext) -> JobContext {
        JobContext {
            cancel: self.cancel.clone(),
            clock: job.clock.clone(),
        }
    }

    /// Releases the lock once the work it protected ended with `result`, and returns what the
    /// caller should report. A lock lost while the work failed makes the failure an
    /// [`ErrorKind::Locked`] one (exit 7): the cancellation the loss caused keeps its message,
    /// which names the lock and says what the work left (a restore's half-restored target);
    /// another failure is reported after the loss. Work that succeeded all the same stands, with
    /// a warning. A release that fails is a warning: the object goes stale on its own.
    pub async fn finish<T>(self, result: Result<T>) -> Result<T> {
        let lost = self.check();
        let id = self.record.id.clone();
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the repository lock {id}");
        }
        match (result, lost) {
            (Err(work), Err(_)) if work.kind() == ErrorKind::Interrupted => {
                Err(Error::new(ErrorKind::Locked, work))
            }
            (Err(work), Err(lost)) => Err(Error::new(
                ErrorKind::Locked,
                format!("{lost} (and the work failed: {work})"),
            )),
            (Ok(value), Err(lost)) => {
                tracing::warn!("the work finished, but {lost}");
                Ok(value)
            }
            (result, Ok(())) => result,
        }
    }

    /// Stops refreshing and removes the lock object.
    pub async fn release(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let key = lock_key(&self.record.id);
        self.repository
            .storage()
            .delete(&key)
            .await
            .map_err(|e| e.context(format!("releasing lock {}", self.record.id)))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return; // released
        };
        self.stop.cancel();
        let key = lock_key(&self.record.id);
        let repository = self.repository.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // After the refresher stopped, so a refresh in flight cannot write it back.
                let _ = task.await;
                if let Err(e) = repository.storage().delete(&key).await {
                    tracing::warn!("could not remove lock {key}: {e}");
                }
            });
        }
    }
}

struct Refresher {
    repository: Arc<Repository>,
    record: LockRecord,
    clock: Clock,
    options: LockOptions,
    stop: CancellationToken,
    lost: Arc<Mutex<Option<String>>>,
    cancel: Cancel,
}

impl Refresher {
    fn lose(&self, why: String) {
        tracing::warn!("the repository lock {} was lost: {why}", self.record.id);
        *lock(&self.lost) = Some(why.clone());
        self.cancel.cancel(Reason::Stopped(format!(
            "the repository lock {} was lost: {why}",
            self.record.id
        )));
    }
}

async fn refresh_loop(mut r: Refresher) {
    let key = lock_key(&r.record.id);
    let stale_after = signed(r.options.stale_after);
    let storage = r.repository.storage();
    loop {
        tokio::select! {
            () = r.stop.cancelled() => return,
            () = tokio::time::sleep(r.options.refresh_every) => {}
        }
        let now = r.clock.now();
        let since = now.duration_since(r.record.heartbeat);
        if since >= stale_after {
            r.lose(format!(
                "its heartbeat was last stored {} ago, beyond stale_after ({}): another coffer \
                 may have taken it over",
                human(since),
                human(stale_after)
            ));
            return;
        }
        let failed = match storage.get_bytes(&key).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                r.lose(format!(
                    "{key} was removed by someone else (coffer lock break, or taken over as stale)"
                ));
                return;
            }
            Err(e) => Some(e),
            Ok(_) => {
                let mut next = r.record.clone();
                next.heartbeat = now;
                match write(&r.repository, &next).await {
                    Ok(()) => {
                        r.record = next;
                        None
                    }
                    Err(e) => Some(e),
                }
            }
        };
        if let Some(e) = failed {
            tracing::warn!("could not refresh the repository lock {}: {e}", r.record.id);
            if since.saturating_mul(2) >= stale_after {
                r.lose(format!(
                    "its heartbeat could not be refreshed for {} (last error: {e})",
                    human(since)
                ));
                return;
            }
        }
    }
}

async fn write(repository: &Repository, record: &LockRecord) -> Result<()> {
    let body = serde_json::to_vec_pretty(record).expect("a lock record serializes");
    repository
        .storage()
        .put(&lock_key(&record.id), Bytes::from(body))
        .await
        .map_err(|e| e.context(format!("writing lock {}", record.id)))
}

/// Deletes our object, if any; a failure is logged (the object goes stale on its own).
async fn withdraw(repository: &Repository, own: Option<LockRecord>) {
    if let Some(record) = own
        && let Err(e) = repository.storage().delete(&lock_key(&record.id)).await
    {
        tracing::warn!("could not remove lock {}: {e}", record.id);
    }
}

async fn scan(
    repository: &Repository,
    now: Timestamp,
    stale_after: Duration,
    local_host: &str,
) -> Result<Vec<LockEntry>> {
    let storage = repository.storage();
    let objects = list_locks(storage).await?;
    let mut entries = Vec::new();
    for object in objects {
        let Some(id) = object
            .key
            .strip_prefix(LOCKS)
            .and_then(|rest| rest.strip_suffix(".json"))
            .filter(|id| is_valid_lock_id(id))
        else {
            continue;
        };
        let bytes = match storage.get_bytes(&object.key).await {
            Ok(bytes) => bytes,
            // Released between the listing and the read.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (record, problem) = match serde_json::from_slice::<LockRecord>(&bytes) {
            Ok(record) if record.id == id => (Some(record), None),
            Ok(record) => (None, Some(format!("it names lock {:?}", record.id))),
            Err(e) => (None, Some(format!("not a lock record: {e}"))),
        };
        let stale = match &record {
            Some(record) => staleness(record, now, stale_after, local_host),
            // Unreadable: live (and exclusive) until the object itself is stale_after old.
            None => object
                .last_modified
                .map(|at| now.duration_since(at))
                .filter(|age| *age > signed(stale_after))
                .map(|age| format!("it is unreadable and was last written {} ago", human(age))),
        };
        entries.push(LockEntry {
            id: id.to_string(),
            key: object.key.clone(),
            record,
            problem,
            last_modified: object.last_modified,
            stale,
        });
    }
    entries.sort_by(|a, b| a.order().cmp(&b.order()));
    Ok(entries)
}

/// Lists `locks/`, asking again after a failure: the folder backend can fail a listing when an
/// object goes between reading the folder and reading the object's metadata, which concurrent
/// lockers make common.
async fn list_locks(
    storage: &dyn crate::storage::Storage,
) -> Result<Vec<crate::storage::ObjectMeta>> {
    let mut tries = 0;
    loop {
        match storage.list(LOCKS).await {
            Ok(objects) => return Ok(objects),
            Err(e) if tries < 3 && e.kind() == ErrorKind::Storage => {
                tries += 1;
                tracing::debug!("listing {LOCKS} again after: {e}");
                tokio::time::sleep(Duration::from_millis(10 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn staleness(
    record: &LockRecord,
    now: Timestamp,
    stale_after: Duration,
    local_host: &str,
) -> Option<String> {
    let age = now.duration_since(record.heartbeat);
    if age > signed(stale_after) {
        return Some(format!(
            "its heartbeat is {} old (stale after {})",
            human(age),
            human(signed(stale_after))
        ));
    }
    if record.host == local_host && !pid_alive(record.pid) {
        return Some(format!(
            "process {} is not running on {}",
            record.pid, record.host
        ));
    }
    None
}

/// Whether process `pid` runs on this host; when `/proc` is not there to ask, it is assumed to.
pub fn pid_alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// This host's name, as lock records name it.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_string())
                .filter(|name| !name.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

fn not_obtained(
    kind: LockKind,
    purpose: &str,
    wait: Duration,
    conflicts: &[LockEntry],
    now: Timestamp,
) -> Error {
    let holders = if conflicts.is_empty() {
        "no other lock was listed, but the listing did not show ours either".to_string()
    } else {
        let list: Vec<String> = conflicts.iter().map(|c| c.describe(now)).collect();
        format!("held by {}", list.join("; "))
    };
    Error::new(
        ErrorKind::Locked,
        format!(
            "getting {} {kind} repository lock for {purpose}: not obtained within {}; {holders}",
            match kind {
                LockKind::Shared => "a",
                LockKind::Exclusive => "an",
            },
            human(signed(wait))
        ),
    )
}

/// `retry_min · 2^attempt`, at most `retry_max`, plus up to half of it again at random.
fn backoff(options: &LockOptions, attempt: u32) -> Duration {
    let base = options
        .retry_min
        .saturating_mul(1u32 << attempt.min(16))
        .min(options.retry_max);
    let jitter = base.mul_f64((random() % 1000) as f64 / 2000.0);
    base + jitter
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// `45 s`, `3 min`, `2 h 5 min`; a negative age (a clock ahead of ours) reads `0 s`.
fn human(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// 64 random bits: std's per-process random hash keys over the time, the pid and a counter.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_i128(Timestamp::now().as_nanosecond());
    hasher.finish()
}

/// `YYYYMMDDTHHMMSSZ-` and 12 random hexadecimal digits.
fn new_id(now: Timestamp) -> String {
    format!(
        "{}-{:012x}",
        now.strftime("%Y%m%dT%H%M%SZ"),
        random() & 0xffff_ffff_ffff
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::storage::LocalStorage;

    fn repository(dir: &tempfile::TempDir) -> Arc<Repository> {
        Arc::new(Repository::from_storage(Box::new(LocalStorage::new(
            dir.path().to_path_buf(),
        ))))
    }

    fn fast() -> LockOptions {
        LockOptions {
            stale_after: DEFAULT_STALE_AFTER,
            refresh_every: Duration::from_millis(20),
            retry_min: Duration::from_millis(2),
            retry_max: Duration::from_millis(20),
        }
    }

    fn manual() -> Clock {
        Clock::manual("2026-12-02T01:00:00Z".parse().unwrap())
    }

    async fn take(
        repo: &Arc<Repository>,
        kind: LockKind,
        purpose: &str,
        wait_ms: u64,
        clock: &Clock,
    ) -> Result<LockGuard> {
        acquire_with(
            repo,
            kind,
            purpose,
            Duration::from_millis(wait_ms),
            clock,
            &Cancel::new(),
            &fast(),
        )
        .await
    }

    async fn ids(repo: &Repository, clock: &Clock) -> Vec<String> {
        list(repo, clock, DEFAULT_STALE_AFTER)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    /// Writes a lock object by hand, as another process would have.
    async fn plant(
        repo: &Repository,
        kind: LockKind,
        host: &str,
        pid: u32,
        heartbeat: Timestamp,
    ) -> String {
        let id = new_id(heartbeat);
        let record = LockRecord {
            id: id.clone(),
            kind,
            purpose: "planted".into(),
            host: host.into(),
            pid,
            created: heartbeat,
            heartbeat,
            created_by: String::new(),
        };
        write(repo, &record).await.unwrap();
        id
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        pid
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_release_removes_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = Clock::system();
        let a = take(&repo, LockKind::Shared, "backup full", 0, &clock)
            .await
            .unwrap();
        let b = take(&repo, LockKind::Shared, "verify", 0, &clock)
            .await
            .unwrap();
        let listed = list(&repo, &clock, DEFAULT_STALE_AFTER).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .all(|e| !e.is_stale() && e.kind() == LockKind::Shared)
        );
        let record = listed
            .iter()
            .find(|e| e.id == a.id())
            .unwrap()
            .record
            .clone()
            .unwrap();
        assert_eq!(record.host, host_name());
        assert_eq!(record.pid, std::process::id());
        assert_eq!(record.purpose, "backup full");
        a.release().await.unwrap();
        assert_eq!(ids(&repo, &clock).await, vec![b.id().to_string()]);
        b.release().await.unwrap();
        assert!(ids(&repo, &clock).await.is_empty());
        assert!(!dir.path().join(lock_key("x")).exists());
    }

    #[tokio::test]
    async fn an_exclusive_lock_waits_for_shared_ones_and_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = Clock::system();
        let shared = take(&repo, LockKind::Shared, "backup full", 0, &clock)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let err = take(&repo, LockKind::Exclusive, "prune", 300, &clock)
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(err.kind(), ErrorKind::Locked);
        let text = err.to_string();
        for part in [
            "exclusive repository lock for prune",
            shared.id(),
            "(backup full)",
            &format!("of {} pid {}", host_name(), std::process::id()),
            "heartbeat",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        assert!(!text.contains('\n'));
        // The loser left nothing behind; a shared lock still gets in beside the holder.
        assert_eq!(ids(&repo, &clock).await, vec![shared.id().to_string()]);
        let other = take(&repo, LockKind::Shared, "restore", 0, &clock)
            .await
            .unwrap();
        other.release().await.unwrap();

        // Once the holder goes, the waiting exclusive lock gets it.
        let waiter = tokio::spawn({
            let repo = repo.clone();
            let clock = clock.clone();
            async move { take(&repo, LockKind::Exclusive, "prune", 5_000, &clock).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        shared.release().await.unwrap();
        let prune = waiter.await.unwrap().unwrap();
        assert_eq!(prune.record().kind, LockKind::Exclusive);
        let err = take(&repo, LockKind::Shared, "backup full", 50, &clock)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("(prune)"), "{err}");
        prune.release().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_racing_exclusive_lockers_exactly_one_wins() {
        for clock in [manual(), Clock::system()] {
            for round in 0..25 {
                let dir = tempfile::tempdir().unwrap();
                let repo = repository(&dir);
                let racers: Vec<_> = (0..3)
                    .map(|i| {
                        let repo = repo.clone();
                        let clock = clock.clone();
                        tokio::spawn(async move {
                            take(
                                &repo,
                                LockKind::Exclusive,
                                &format!("prune {i}"),
                                150,
                                &clock,
                            )
                            .await
                        })
                    })
                    .collect();
                let mut winners = Vec::new();
                for racer in racers {
                    match racer.await.unwrap() {
                        Ok(guard) => winners.push(guard),
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Locked, "{e}"),
                    }
                }
                assert_eq!(
                    winners.len(),
                    1,
                    "round {round} (manual clock: {})",
                    clock.is_manual()
                );
                let winner = winners.pop().unwrap();
                assert_eq!(ids(&repo, &clock).await, vec![winner.id().to_string()]);
                winner.release().await.unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn without_a_wait_racing_lockers_never_both_win() {
        let mut rounds_won = 0;
        for _ in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let repo = repository(&dir);
            let racers: Vec<_> = (0..4)
                .map(|i| {
                    let repo = repo.clone();
                    let kind = if i == 0 {
                        LockKind::Shared
                    } else {
                        LockKind::Exclusive
                    };
                    tokio::spawn(
                        async move { take(&repo, kind, "race", 0, &Clock::system()).await },
                    )
                })
                .collect();
            let mut winners = Vec::new();
            for racer in racers {
                if let Ok(guard) = racer.await.unwrap() {
                    winners.push(guard);
                }
            }
            assert!(winners.len() <= 1, "{} won at once", winners.len());
            rounds_won += winners.len();
            for guard in winners {
                guard.release().await.unwrap();
            }
            assert!(
                ids(&repo, &Clock::system()).await.is_empty(),
                "a loser left its lock"
            );
        }
        assert!(rounds_won > 0, "nobody ever won");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_exclusive_holder_is_never_beside_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let shared = Arc::new(AtomicUsize::new(0));
        let exclusive = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let (repo, shared, exclusive) = (repo.clone(), shared.clone(), exclusive.clone());
                tokio::spawn(async move {
                    let kind = if i % 3 == 0 {
                        LockKind::Exclusive
                    } else {
                        LockKind::Shared
                    };
                    for _ in 0..4 {
                        let guard = take(&repo, kind, "work", 30_000, &Clock::system())
                            .await
                            .unwrap();
                        let mine = if kind == LockKind::Exclusive {
                            &exclusive
                        } else {
                            &shared
                        };
                        mine.fetch_add(1, Ordering::SeqCst);
                        for _ in 0..5 {
                            let (s, e) = (
                                shared.load(Ordering::SeqCst),
                                exclusive.load(Ordering::SeqCst),
                            );
                            assert!(
                                e == 0 || (e == 1 && s == 0),
                                "{e} exclusive beside {s} shared"
                            );
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        mine.fetch_sub(1, Ordering::SeqCst);
                        guard.release().await.unwrap();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        assert!(ids(&repo, &Clock::system()).await.is_empty());
    }

    #[tokio::test]
    async fn a_stale_heartbeat_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = manual();
        let old = clock.now() - SignedDuration::from_mins(31);
        let fresh = clock.now() - SignedDuration::from_mins(29);
        let stale = plant(&repo, LockKind::Exclusive, "elsewhere", 1, old).await;
        let live = plant(&repo, LockKind::Shared, "elsewhere", 1, fresh).await;
        let listed = list(&repo, &clock, DEFAULT_STALE_AFTER).await.unwrap();
        assert_eq!(listed[0].id, stale);
        assert_eq!(
            listed[0].stale.as_deref(),
            Some("its heartbeat is 31 min old (stale after 30 min)")
        );
        assert!(!listed[1].is_stale());
        // A shared locker takes the stale exclusive lock over and coexists with the live one.
        let guard = take(&repo, LockKind::Shared, "backup full", 0, &clock)
            .await
            .unwrap();
        let mut expected = vec![live.clone(), guard.id().to_string()];
        expected.sort();
        let mut now = ids(&repo, &clock).await;
        now.sort();
        assert_eq!(now, expected);
        guard.release().await.unwrap();
        // Once the clock passes its heartbeat by stale_after, the other one goes too.
        clock.advance(SignedDuration::from_mins(2));
        let guard = take(&repo, LockKind::Exclusive, "prune", 0, &clock)
            .await
            .unwrap();
        assert_eq!(ids(&repo, &clock).await, vec![guard.id().to_string()]);
        guard.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_process_on_this_host_is_taken_over_but_not_one_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = manual();
        let pid = dead_pid();
        let here = plant(&repo, LockKind::Exclusive, &host_name(), pid, clock.now()).await;
        let listed = list(&repo, &clock, DEFAULT_STALE_AFTER).await.unwrap();
        assert_eq!(
            listed[0].stale,
            Some(format!("process {pid} is not running on {}", host_name()))
        );
        let guard = take(&repo, LockKind::Exclusive, "prune", 0, &clock)
            .await
            .unwrap();
        assert!(!ids(&repo, &clock).await.contains(&here));
        guard.release().await.unwrap();

        let elsewhere = plant(&repo, LockKind::Exclusive, "another-host", pid, clock.now()).await;
        let err = take(&repo, LockKind::Shared, "backup full", 30, &clock)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Locked);
        assert!(err.to_string().contains(&elsewhere), "{err}");
    }

    #[tokio::test]
    async fn an_unreadable_lock_counts_as_a_live_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = Clock::system();
        repo.storage()
            .put("locks/garbage.json", Bytes::from_static(b"{"))
            .await
            .unwrap();
        repo.storage()
            .put("locks/README", Bytes::from_static(b"ignored"))
            .await
            .unwrap();
        let listed = list(&repo, &clock, DEFAULT_STALE_AFTER).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].record.is_none() && !listed[0].is_stale());
        let err = take(&repo, LockKind::Shared, "verify", 0, &clock)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unreadable lock garbage"), "{err}");
        // Stale once the object is older than stale_after.
        let later = Clock::manual(clock.now() + SignedDuration::from_hours(1));
        assert!(list(&repo, &later, DEFAULT_STALE_AFTER).await.unwrap()[0].is_stale());
    }

    #[tokio::test]
    async fn the_guard_refreshes_its_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = manual();
        let guard = take(&repo, LockKind::Shared, "backup full", 0, &clock)
            .await
            .unwrap();
        let start = clock.now();
        clock.advance(SignedDuration::from_mins(1));
        let heartbeat = || async {
            list(&repo, &clock, DEFAULT_STALE_AFTER).await.unwrap()[0]
                .record
                .clone()
                .unwrap()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let record = heartbeat().await;
            if record.heartbeat == start + SignedDuration::from_mins(1) {
                assert_eq!(record.created, start);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "heartbeat not refreshed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(guard.lost().is_none() && guard.check().is_ok());
        guard.release().await.unwrap();
        assert!(
            ids(&repo, &clock).await.is_empty(),
            "a release is not undone by a refresh"
        );
    }

    #[tokio::test]
    async fn a_broken_lock_is_lost_and_cancels_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = manual();
        let guard = take(&repo, LockKind::Exclusive, "prune", 0, &clock)
            .await
            .unwrap();
        let removed = break_lock(
            &repo,
            BreakTarget::Id(guard.id()),
            true,
            &clock,
            DEFAULT_STALE_AFTER,
        )
        .await
        .unwrap();
        assert_eq!(removed.len(), 1);
        tokio::time::timeout(Duration::from_secs(5), guard.cancel().cancelled())
            .await
            .expect("cancelled");
        assert!(guard.lost().unwrap().contains("removed by someone else"));
        assert_eq!(guard.check().unwrap_err().kind(), ErrorKind::Locked);
        assert!(guard.cancel().check().is_err());
        // It is not written back.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(ids(&repo, &clock).await.is_empty());
        guard.release().await.unwrap();
    }

    #[tokio::test]
    async fn work_run_under_the_guard_stops_when_the_lock_is_lost_and_finish_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = manual();
        let job = JobContext {
            cancel: Cancel::new(),
            clock: clock.clone(),
        };
        // Kept: the work's own result, and the object is gone.
        let guard = acquire_with(
            &repo,
            LockKind::Shared,
            "backup full",
            Duration::ZERO,
            &job.clock,
            &job.cancel,
            &fast(),
        )
        .await
        .unwrap();
        let failed: Result<()> = Err(Error::new(ErrorKind::Backup, "the dump failed"));
        let err = guard.finish(failed).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backup, "{err}");
        assert!(ids(&repo, &clock).await.is_empty());

        let guard = acquire_with(
            &repo,
            LockKind::Shared,
            "backup full",
            Duration::ZERO,
            &job.clock,
            &job.cancel,
            &fast(),
        )
        .await
        .unwrap();
        let locked = guard.job(&job);
        assert_eq!(locked.clock.now(), clock.now());
        break_lock(
            &repo,
            BreakTarget::Id(guard.id()),
            true,
            &clock,
            DEFAULT_STALE_AFTER,
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), locked.cancel.cancelled())
            .await
            .expect("the work is cancelled");
        assert!(!job.cancel.is_cancelled(), "the caller's job goes on");
        let stopped = locked.cancel.check();
        assert_eq!(stopped.as_ref().unwrap_err().kind(), ErrorKind::Interrupted);
        let err = guard.finish(stopped).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
        assert!(err.to_string().contains("was lost"), "{err}");
        assert!(ids(&repo, &clock).await.is_empty());
    }

    #[tokio::test]
    async fn a_heartbeat_left_stale_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = manual();
        let guard = take(&repo, LockKind::Exclusive, "prune", 0, &clock)
            .await
            .unwrap();
        // As if the process had been suspended for 31 minutes between two refreshes.
        clock.advance(SignedDuration::from_mins(31));
        tokio::time::timeout(Duration::from_secs(5), guard.cancel().cancelled())
            .await
            .expect("cancelled");
        assert!(guard.lost().unwrap().contains("may have taken it over"));
        drop(guard);
        // Drop removes the object, best effort, in the background.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !ids(&repo, &clock).await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "not removed on drop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn breaking_refuses_live_locks_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = manual();
        let live = plant(&repo, LockKind::Shared, "elsewhere", 7, clock.now()).await;
        let stale = plant(
            &repo,
            LockKind::Shared,
            "elsewhere",
            8,
            clock.now() - SignedDuration::from_hours(2),
        )
        .await;
        let err = break_lock(
            &repo,
            BreakTarget::Id(&live),
            false,
            &clock,
            DEFAULT_STALE_AFTER,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert!(err.to_string().contains("--force"), "{err}");
        let err = break_lock(
            &repo,
            BreakTarget::Id("nope"),
            false,
            &clock,
            DEFAULT_STALE_AFTER,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = break_lock(
            &repo,
            BreakTarget::Id("../x"),
            false,
            &clock,
            DEFAULT_STALE_AFTER,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let removed = break_lock(
            &repo,
            BreakTarget::AllStale,
            false,
            &clock,
            DEFAULT_STALE_AFTER,
        )
        .await
        .unwrap();
        assert_eq!(
            removed.iter().map(|e| &e.id).collect::<Vec<_>>(),
            vec![&stale]
        );
        assert_eq!(ids(&repo, &clock).await, vec![live.clone()]);
        break_lock(
            &repo,
            BreakTarget::Id(&live),
            true,
            &clock,
            DEFAULT_STALE_AFTER,
        )
        .await
        .unwrap();
        assert!(ids(&repo, &clock).await.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_wait_stops_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir);
        let clock = Clock::system();
        let holder = take(&repo, LockKind::Exclusive, "prune", 0, &clock)
            .await
            .unwrap();
        let cancel = Cancel::new();
        let waiter = tokio::spawn({
            let (repo, clock, cancel) = (repo.clone(), clock.clone(), cancel.clone());
            async move {
                acquire_with(
                    &repo,
                    LockKind::Shared,
                    "backup full",
                    Duration::from_secs(60),
                    &clock,
                    &cancel,
                    &fast(),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel(Reason::Signal(15));
        let err = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("stopped")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Interrupted);
        assert_eq!(ids(&repo, &clock).await, vec![holder.id().to_string()]);
        holder.release().await.unwrap();
    }

    #[test]
    fn ids_sort_by_time_and_are_keys() {
        let at: Timestamp = "2026-12-02T01:53:07Z".parse().unwrap();
        let id = new_id(at);
        assert!(
            id.starts_with("20261202T015307Z-") && id.len() == 29,
            "{id}"
        );
        assert!(is_valid_lock_id(&id));
        assert_ne!(new_id(at), new_id(at));
        crate::storage::check_key(&lock_key(&id)).unwrap();
        assert!(!is_valid_lock_id("a/b") && !is_valid_lock_id(""));
    }
}
