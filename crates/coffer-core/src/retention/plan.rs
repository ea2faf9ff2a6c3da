//! The prune plan: a pure function of (now, catalog, policies, pins) in which every item is kept
//! or deleted, each with its reasons.
//!
//! Above the per-kind policies, four guarantees, which no policy can override:
//!
//! 1. the newest full backup is never deleted;
//! 2. a pinned backup (`coffer backup pin ID --reason …`) is never deleted;
//! 3. every point in time the binlog policy promises stays restorable: the binlogs it keeps need
//!    the full backup they roll forward from (the newest full at or before each of them), and
//!    that full needs every binlog between its snapshot and them — all kept, named as such;
//! 4. a binlog file is kept or deleted as a whole: its segments go with it, and segments a whole
//!    copy superseded go.
//!
//! A manifest of a kind this coffer does not know is kept (a newer coffer wrote it).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::policy::Policy;
use crate::archive::Archive;
use crate::config::RetentionConfig;
use crate::manifest::{BackupKind, Manifest};

/// A backup kept whatever the policies say, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Pin {
    /// The pinned backup.
    pub id: String,
    /// Why, as the operator wrote it.
    pub reason: String,
    /// When it was pinned.
    pub pinned_at: Timestamp,
}

/// One backup in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    /// Backup id.
    pub id: String,
    /// `full`, `binlog`, `segment`, or what an unknown manifest says.
    pub kind: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Whether it stays.
    pub keep: bool,
    /// Why it stays (every rule that keeps it), or why it goes (one line).
    pub reasons: Vec<String>,
}

/// The plan: every backup of the catalog, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrunePlan {
    /// Each backup, kept or deleted.
    pub items: Vec<PlanItem>,
}

impl PrunePlan {
    /// The ids to delete, oldest first.
    pub fn deletions(&self) -> Vec<&str> {
        self.items
            .iter()
            .filter(|i| !i.keep)
            .map(|i| i.id.as_str())
            .collect()
    }

    /// Whether `id` is kept (true for an id the plan does not know).
    pub fn keeps(&self, id: &str) -> bool {
        self.items
            .iter()
            .find(|i| i.id == id)
            .is_none_or(|i| i.keep)
    }
}

/// Plans a prune of `manifests` at `now` (calendar rules read in `tz`).
pub fn plan(
    manifests: &[Manifest],
    policies: &RetentionConfig,
    pins: &[Pin],
    now: Timestamp,
    tz: &TimeZone,
) -> PrunePlan {
    let mut reasons: BTreeMap<&str, Vec<String>> = manifests
        .iter()
        .map(|m| (m.id.as_str(), Vec::new()))
        .collect();
    let mut note = |id: &str, why: String| {
        if let Some(list) = reasons.get_mut(id) {
            list.push(why);
        }
    };

    // Full backups: their policy, the newest one.
    let fulls: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind == BackupKind::Full)
        .collect();
    for (full, kept) in fulls.iter().zip(decide(&policies.full, &fulls, now, tz)) {
        for why in kept {
            note(&full.id, format!("[retention.full] {why}"));
        }
    }
    if let Some(newest) = crate::manifest::newest_full(manifests) {
        note(&newest.id, "the newest full backup".into());
    }

    // Binlog files: their policy, by the time of their last event (a file is as recent as the
    // newest point in time it can restore to). Pieces of one file share its decision.
    let archive = Archive::new(manifests);
    let mut promised: BTreeSet<(u64, String)> = BTreeSet::new();
    let files = archive.files();
    let times: Vec<Timestamp> = files
        .iter()
        .map(|f| {
            f.last_event_time
                .and_then(|s| Timestamp::from_second(s).ok())
                .unwrap_or(f.archived_at)
        })
        .collect();
    for (file, kept) in files.iter().zip(policies.binlog.decide(&times, now, tz)) {
        if kept.is_empty() {
            continue;
        }
        promised.insert((file.server_id, file.file.clone()));
        for piece in &file.pieces {
            for why in &kept {
                note(&piece.id, format!("[retention.binlog] {why}"));
            }
        }
    }

    // Every promised file needs a full backup to roll forward from, and the chain from that
    // full's snapshot to it. Oldest first, each file not yet reachable from a base chosen for an
    // earlier one gets the newest full whose chain reaches it: one base per unbroken stretch,
    // so a keep_last policy is not padded with every full the window happens to contain.
    let mut chosen: Vec<(&Manifest, u64)> = Vec::new();
    let mut promised: Vec<&crate::archive::ArchivedFile<'_>> = files
        .iter()
        .filter(|f| promised.contains(&(f.server_id, f.file.clone())))
        .collect();
    promised.sort_by_key(|f| (f.server_id, f.sequence));
    for file in promised {
        let reaches = |full: &Manifest| {
            full.source.server_id == file.server_id
                && archive
                    .chain_from(full, &[])
                    .iter()
                    .any(|c| c.sequence == file.sequence)
        };
        if let Some((_, through)) = chosen.iter_mut().find(|(base, _)| reaches(base)) {
            *through = file.sequence;
            continue;
        }
        let base = fulls
            .iter()
            .filter(|f| reaches(f))
            .max_by_key(|f| (f.started_at, &f.id));
        if let Some(base) = base {
            chosen.push((base, file.sequence));
        }
    }
    for (base, through) in chosen {
        let last = archive
            .chain_from(base, &[])
            .into_iter()
            .take_while(|c| c.sequence <= through)
            .collect::<Vec<_>>();
        let to = last.last().map_or("", |c| c.file.as_str()).to_string();
        note(
            &base.id,
            format!("base of the point-in-time window through {to}"),
        );
        for link in last {
            for piece in &link.pieces {
                note(
                    &piece.id,
                    format!("needed to roll {} forward to {to}", base.id),
                );
            }
        }
    }

    for pin in pins {
        note(&pin.id, format!("pinned: {}", pin.reason));
    }

    let superseded: BTreeSet<&str> = archive
        .superseded_segments()
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    let mut items: Vec<PlanItem> = manifests
        .iter()
        .map(|m| {
            let mut why = reasons.remove(m.id.as_str()).unwrap_or_default();
            dedup(&mut why);
            let keep = !why.is_empty() || m.kind == BackupKind::Unknown;
            let reasons = if m.kind == BackupKind::Unknown {
                vec!["a kind this coffer does not know: kept".to_string()]
            } else if keep {
                why
            } else {
                vec![gone(m, policies, superseded.contains(m.id.as_str()))]
            };
            PlanItem {
                id: m.id.clone(),
                kind: m.kind.as_str().to_string(),
                started_at: m.started_at,
                keep,
                reasons,
            }
        })
        .collect();
    items.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    PrunePlan { items }
}

fn decide(policy: &Policy, items: &[&Manifest], now: Timestamp, tz: &TimeZone) -> Vec<Vec<String>> {
    let times: Vec<Timestamp> = items.iter().map(|m| m.started_at).collect();
    policy.decide(&times, now, tz)
}

/// Keeps the first of each repeated reason (a piece needed by several promised files).
fn dedup(reasons: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    reasons.retain(|r| seen.insert(r.clone()));
}

/// Why `m` goes, in one line.
fn gone(m: &Manifest, policies: &RetentionConfig, superseded: bool) -> String {
    match m.kind {
        BackupKind::Full => format!(
            "not kept by [retention.full] ({})",
            describe(&policies.full)
        ),
        BackupKind::Segment if superseded => {
            "superseded: its file is archived whole, or it is off the segment chain".into()
        }
        _ => format!(
            "not kept by [retention.binlog] ({}) and no kept full backup rolls forward through it",
            describe(&policies.binlog)
        ),
    }
}

/// `within 30d, last 2`: a policy as one phrase.
pub fn describe(policy: &Policy) -> String {
    let mut parts = Vec::new();
    if let Some(span) = policy.keep_within {
        parts.push(format!("within {span:#}"));
    }
    for (name, n) in [
        ("last", policy.keep_last),
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
        ("monthly", policy.keep_monthly),
        ("yearly", policy.keep_yearly),
    ] {
        if let Some(n) = n {
            parts.push(format!("{name} {n}"));
        }
    }
    if parts.is_empty() {
        "no rule: keeps everything".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ArchivedBinlog, BinlogCoordinates, SourceInfo};
    use crate::retention::parse_span;
    use proptest::prelude::*;

    const DAY: i64 = 86_400;
    /// 2026-12-01T00:00:00Z.
    const NOW: i64 = 1_796_083_200;

    fn source() -> SourceInfo {
        SourceInfo {
            host: "db".into(),
            port: 3306,
            server_version: "10.11".into(),
            server_id: 1,
            dump_tool: "t".into(),
        }
    }

    fn ts(at: i64) -> Timestamp {
        Timestamp::from_second(at).unwrap()
    }

    fn full(id: &str, at: i64, binlog: u64) -> Manifest {
        let mut m = Manifest::finished_now(id, BackupKind::Full, ts(at), source());
        m.started_at = ts(at);
        m.binlog = Some(BinlogCoordinates {
            file: format!("bin.{binlog:06}"),
            position: 400,
            gtid_position: None,
        });
        m
    }

    /// Binlog number `n`, covering `[at - 6 h, at]`.
    fn binlog(id: &str, at: i64, n: u64) -> Manifest {
        let mut m = Manifest::finished_now(id, BackupKind::Binlog, ts(at), source());
        m.started_at = ts(at);
        m.binlog_file = Some(ArchivedBinlog {
            file: format!("bin.{n:06}"),
            server_id: 1,
            first_event_time: Some(at - 6 * 3600),
            last_event_time: Some(at),
            last_commit_time: Some(at),
            end_position: 1000,
            transactions: 1,
            first_gtid: None,
            last_gtid: None,
            next_file: None,
            segment_start: None,
        });
        m
    }

    fn policies(full: Policy) -> RetentionConfig {
        RetentionConfig {
            full,
            ..RetentionConfig::default()
        }
    }

    fn kept(plan: &PrunePlan) -> Vec<&str> {
        plan.items
            .iter()
            .filter(|i| i.keep)
            .map(|i| i.id.as_str())
            .collect()
    }

    /// 40 days: a full at 02:00 each day, a binlog file closed every 6 hours.
    fn runbook_history() -> Vec<Manifest> {
        let mut manifests = Vec::new();
        let mut n = 1;
        for day in (1..=40).rev() {
            let midnight = NOW - day * DAY;
            manifests.push(full(&format!("full-{day:02}"), midnight + 2 * 3600, n));
            for quarter in 1..=4 {
                manifests.push(binlog(
                    &format!("bin-{n:03}"),
                    midnight + quarter * 6 * 3600,
                    n,
                ));
                n += 1;
            }
        }
        manifests
    }

    #[test]
    fn the_runbook_keeps_thirty_days_of_fulls_and_seven_of_binlogs_with_their_base() {
        let manifests = runbook_history();
        let plan = plan(
            &manifests,
            &RetentionConfig::default(),
            &[],
            ts(NOW),
            &TimeZone::UTC,
        );
        let kept_fulls: Vec<&str> = kept(&plan)
            .into_iter()
            .filter(|id| id.starts_with("full"))
            .collect();
        assert_eq!(kept_fulls.len(), 30, "{kept_fulls:?}");
        // The oldest binlog kept by policy is 7 days old; the full before it is its base, and
        // every binlog from that full's snapshot on stays.
        let kept_binlogs = kept(&plan)
            .into_iter()
            .filter(|id| id.starts_with("bin"))
            .count();
        // 29 files end within the 7 days (the one closing at the boundary included), and the 3
        // before them from full-08's snapshot on are what rolls full-08 forward to them.
        assert_eq!(kept_binlogs, 29 + 3);
        let base = plan.items.iter().find(|i| i.id == "full-08").unwrap();
        assert!(
            base.reasons
                .iter()
                .any(|r| r.starts_with("base of the point-in-time window")),
            "{base:?}"
        );
        let gone = plan.items.iter().find(|i| i.id == "full-31").unwrap();
        assert_eq!(gone.reasons, ["not kept by [retention.full] (within 30d)"]);
    }

    #[test]
    fn keep_last_two_keeps_the_two_newest_fulls_and_what_the_binlog_window_needs() {
        let manifests = runbook_history();
        let policy = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let plan = plan(&manifests, &policies(policy), &[], ts(NOW), &TimeZone::UTC);
        let fulls: Vec<&str> = kept(&plan)
            .into_iter()
            .filter(|id| id.starts_with("full"))
            .collect();
        // The newest two, and the base of the binlog window seven days back.
        assert_eq!(fulls, ["full-08", "full-02", "full-01"]);
        let binlog_policy = RetentionConfig {
            full: Policy {
                keep_last: Some(2),
                ..Policy::default()
            },
            binlog: Policy {
                keep_last: Some(1),
                ..Policy::default()
            },
            drill: Policy::default(),
            ..RetentionConfig::default()
        };
        let plan = super::plan(&manifests, &binlog_policy, &[], ts(NOW), &TimeZone::UTC);
        let fulls: Vec<&str> = kept(&plan)
            .into_iter()
            .filter(|id| id.starts_with("full"))
            .collect();
        assert_eq!(fulls, ["full-02", "full-01"]);
    }

    #[test]
    fn a_pinned_backup_and_the_newest_full_are_never_deleted() {
        let manifests = vec![
            full("old", NOW - 400 * DAY, 1),
            full("newest", NOW - 100 * DAY, 5),
        ];
        let pins = [Pin {
            id: "old".into(),
            reason: "legal hold".into(),
            pinned_at: ts(NOW),
        }];
        let plan = plan(
            &manifests,
            &RetentionConfig::default(),
            &pins,
            ts(NOW),
            &TimeZone::UTC,
        );
        assert_eq!(plan.items[0].reasons, ["pinned: legal hold"]);
        assert_eq!(plan.items[1].reasons, ["the newest full backup"]);
        assert!(plan.deletions().is_empty());
    }

    #[test]
    fn an_unknown_kind_is_kept() {
        let mut m = full("x", NOW - 400 * DAY, 1);
        m.kind = BackupKind::Unknown;
        let plan = plan(
            &[m],
            &RetentionConfig::default(),
            &[],
            ts(NOW),
            &TimeZone::UTC,
        );
        assert!(plan.items[0].keep);
    }

    /// The plan as a reviewer reads it: one line per backup, deletions marked.
    fn render(plan: &PrunePlan) -> String {
        plan.items
            .iter()
            .map(|i| {
                format!(
                    "{} {:<8} {}",
                    if i.keep { "keep  " } else { "DELETE" },
                    i.id,
                    i.reasons.join("; ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Ten days of the runbook's history (a full a day, a binlog every six hours), planned under
    /// each policy the runbook or its operators use: one snapshot file per policy.
    #[test]
    fn plans_for_the_runbook_policies() {
        let manifests: Vec<Manifest> = runbook_history()
            .into_iter()
            .filter(|m| m.started_at >= ts(NOW - 10 * DAY))
            .collect();
        let short = |full: &str, binlog: &str| RetentionConfig {
            full: Policy {
                keep_within: Some(parse_span(full).unwrap()),
                ..Policy::default()
            },
            binlog: Policy {
                keep_within: Some(parse_span(binlog).unwrap()),
                ..Policy::default()
            },
            drill: Policy::default(),
            ..RetentionConfig::default()
        };
        let cases = [
            ("runbook_within_5d_binlogs_2d", short("5d", "2d")),
            (
                "keep_last_2_binlogs_1d",
                RetentionConfig {
                    full: Policy {
                        keep_last: Some(2),
                        ..Policy::default()
                    },
                    binlog: Policy {
                        keep_within: Some(parse_span("1d").unwrap()),
                        ..Policy::default()
                    },
                    drill: Policy::default(),
                    ..RetentionConfig::default()
                },
            ),
            (
                "daily_3_weekly_1_binlogs_last_2",
                RetentionConfig {
                    full: Policy {
                        keep_daily: Some(3),
                        keep_weekly: Some(1),
                        ..Policy::default()
                    },
                    binlog: Policy {
                        keep_last: Some(2),
                        ..Policy::default()
                    },
                    drill: Policy::default(),
                    ..RetentionConfig::default()
                },
            ),
        ];
        for (name, config) in cases {
            let plan = plan(&manifests, &config, &[], ts(NOW), &TimeZone::UTC);
            insta::assert_snapshot!(name, render(&plan));
        }
    }

    fn arb_history() -> impl Strategy<Value = Vec<Manifest>> {
        // Up to 60 binlog files, one every 4–30 hours; fulls at random files.
        prop::collection::vec((4i64..30, any::<bool>()), 1..60).prop_map(|steps| {
            let mut manifests = Vec::new();
            let mut at = NOW - 40 * DAY;
            for (n, (hours, with_full)) in steps.into_iter().enumerate() {
                let n = n as u64 + 1;
                if with_full || n == 1 {
                    manifests.push(full(&format!("f{n:03}"), at - 3600, n));
                }
                at += hours * 3600;
                manifests.push(binlog(&format!("b{n:03}"), at, n));
            }
            manifests
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            prop::option::of(prop::sample::select(vec!["1d", "7d", "30d"])),
            prop::option::of(0usize..4),
            prop::option::of(0usize..4),
        )
            .prop_map(|(within, last, daily)| Policy {
                keep_within: within.map(|w| parse_span(w).unwrap()),
                keep_last: last,
                keep_daily: daily,
                ..Policy::default()
            })
    }

    proptest! {
        /// Whatever the history and the policies, after the plan every binlog it keeps can
        /// still be reached by rolling a kept full forward, and the newest full stays.
        #[test]
        fn every_promised_point_in_time_stays_restorable(
            manifests in arb_history(),
            full_policy in arb_policy(),
            binlog_policy in arb_policy(),
        ) {
            let config = RetentionConfig { full: full_policy, binlog: binlog_policy, drill: Policy::default(), ..RetentionConfig::default() };
            let plan = plan(&manifests, &config, &[], ts(NOW), &TimeZone::UTC);
            let after: Vec<Manifest> =
                manifests.iter().filter(|m| plan.keeps(&m.id)).cloned().collect();
            let newest = crate::manifest::newest_full(&manifests).unwrap();
            prop_assert!(plan.keeps(&newest.id));
            let archive = Archive::new(&after);
            let reachable: BTreeSet<String> = after
                .iter()
                .filter(|m| m.kind == BackupKind::Full)
                .flat_map(|f| archive.chain_from(f, &[]).into_iter().map(|c| c.file.clone()))
                .collect();
            // What the binlog policy alone keeps, computed on the whole history.
            let before = Archive::new(&manifests);
            let times: Vec<Timestamp> = before
                .files()
                .iter()
                .map(|f| ts(f.last_event_time.unwrap()))
                .collect();
            let promised = config.binlog.decide(&times, ts(NOW), &TimeZone::UTC);
            for (file, why) in before.files().iter().zip(promised) {
                let rollable = manifests.iter().filter(|m| m.kind == BackupKind::Full)
                    .any(|f| before.chain_from(f, &[]).iter().any(|c| c.file == file.file));
                if !why.is_empty() && rollable {
                    prop_assert!(reachable.contains(&file.file), "{} promised but unreachable", file.file);
                }
            }
        }
    }
}
