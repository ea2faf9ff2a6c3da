//! The drill report: the runbook's checklist with a status, evidence and duration per item,
//! stored in the repository as JSON (for `drill history` and machines) and Markdown (for people).

use coffer_core::repository::Repository;
use coffer_core::{Error, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Where drill reports live in the repository: `reports/drills/ID.json` and `ID.md`.
pub const REPORTS_PREFIX: &str = coffer_core::repository::DRILL_REPORTS;

/// One item of the runbook's restore-test checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChecklistItem {
    /// The backup's digests verified and its dump (and binlogs) loaded.
    RestoreSuccessful,
    /// Every schema object the backup holds exists in the sandbox.
    AllTablesPresent,
    /// Row counts and data digests equal the backup's.
    DataCountsMatch,
    /// A sample of the newest file snapshot restores with matching hashes.
    FilesAccessible,
    /// The application's checks pass against the sandbox.
    ApplicationStarts,
    /// The SQL probes of critical features pass.
    CriticalFeaturesWork,
}

impl ChecklistItem {
    /// Every item, in the runbook's order.
    pub const ALL: [ChecklistItem; 6] = [
        Self::RestoreSuccessful,
        Self::AllTablesPresent,
        Self::DataCountsMatch,
        Self::FilesAccessible,
        Self::ApplicationStarts,
        Self::CriticalFeaturesWork,
    ];

    /// The item's name in the runbook, reports and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RestoreSuccessful => "database restore successful",
            Self::AllTablesPresent => "all tables present",
            Self::DataCountsMatch => "data counts match",
            Self::FilesAccessible => "files accessible",
            Self::ApplicationStarts => "application starts",
            Self::CriticalFeaturesWork => "critical features work",
        }
    }
}

/// The runbook's checklist, in its order: the names of [`ChecklistItem::ALL`].
pub const CHECKLIST: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < 6 {
        names[i] = ChecklistItem::ALL[i].name();
        i += 1;
    }
    names
};

/// An item's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Proven.
    Pass,
    /// Disproven, or could not be proven.
    Fail,
    /// Not applicable (the evidence says why).
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Skipped => "skipped",
        }
    }
}

/// One checklist item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// One of [`CHECKLIST`].
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// What was checked and what was found, one entry per fact.
    pub evidence: Vec<String>,
    /// Time spent on it.
    pub duration_ms: u64,
}

/// The verdict of a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every item that ran passed.
    Pass,
    /// At least one item failed.
    Fail,
}

/// A drill's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// `YYYYMMDDTHHMMSSZ-drill-XXXX`.
    pub id: String,
    /// Pass only when every non-skipped item passed.
    pub verdict: Verdict,
    /// The full backup restored.
    pub backup_id: String,
    /// When the drill started and ended.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Seconds from the start of the restore to the end of the binlog replay.
    pub recovery_time_seconds: Option<f64>,
    /// Age, at drill time, of the newest transaction the sandbox holds (seconds).
    pub recovery_point_seconds: Option<i64>,
    /// The binlog position the replay reached (`FILE:POS`), if any was replayed.
    pub replayed_to: Option<String>,
    /// The source's server version, from the backup.
    pub source_version: String,
    /// The sandbox's server version.
    pub sandbox_version: Option<String>,
    /// Where the drill restored: `managed mariadbd on 127.0.0.1:PORT`, or
    /// `external HOST:PORT (databases prefixed PREFIX)`.
    pub sandbox: String,
    /// Warnings that do not fail the drill (a major version mismatch, …).
    pub warnings: Vec<String>,
    /// The checklist.
    pub items: Vec<Item>,
}

impl DrillReport {
    /// The verdict the items imply.
    pub fn verdict_of(items: &[Item]) -> Verdict {
        if items.iter().any(|i| i.status == Status::Fail) {
            Verdict::Fail
        } else {
            Verdict::Pass
        }
    }

    /// The report for people.
    pub fn to_markdown(&self, tz: &jiff::tz::TimeZone) -> String {
        let show = |t: Timestamp| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        };
        let mut out = format!(
            "# Recovery drill {}: {}\n\n",
            self.id,
            match self.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
            }
        );
        out.push_str(&format!("- backup: `{}`\n", self.backup_id));
        out.push_str(&format!(
            "- run: {} to {}\n",
            show(self.started_at),
            show(self.finished_at)
        ));
        out.push_str(&format!(
            "- sandbox: {} (server {}; source {})\n",
            self.sandbox,
            self.sandbox_version.as_deref().unwrap_or("not started"),
            self.source_version
        ));
        out.push_str(&format!(
            "- recovery time: {}\n",
            self.recovery_time_seconds
                .map_or("not reached".into(), |s| format!("{s:.1} s"))
        ));
        out.push_str(&format!(
            "- recovery point: {}{}\n",
            self.recovery_point_seconds
                .map_or("unknown".into(), |s| format!("{s} s old")),
            self.replayed_to
                .as_ref()
                .map_or(String::new(), |p| format!(" (binlogs replayed to {p})"))
        ));
        for warning in &self.warnings {
            out.push_str(&format!("- warning: {warning}\n"));
        }
        out.push_str("\n| item | status | time | evidence |\n|---|---|---|---|\n");
        for item in &self.items {
            let evidence = item
                .evidence
                .iter()
                .map(|e| e.replace('|', "\\|").replace('\n', " "))
                .collect::<Vec<_>>()
                .join("<br>");
            out.push_str(&format!(
                "| {} | {} | {} ms | {} |\n",
                item.name,
                item.status.as_str(),
                item.duration_ms,
                evidence
            ));
        }
        out
    }

    /// Stores the report as `reports/drills/ID.json` and `ID.md`.
    pub async fn save(
        &self,
        repository: &Repository,
        tz: &jiff::tz::TimeZone,
        cancel: &coffer_core::cancel::Cancel,
    ) -> Result<()> {
        // An interrupted drill proved nothing: no report of it is kept.
        cancel.check()?;
        let mut json = serde_json::to_vec_pretty(self).expect("a report always serializes");
        json.push(b'\n');
        // Each signed (when a signing key is configured) before it is stored.
        repository
            .put_signed(
                &format!("{REPORTS_PREFIX}{}.md", self.id),
                self.to_markdown(tz).into_bytes().into(),
            )
            .await?;
        // The JSON last: history lists the JSON, so a listed report has its Markdown too.
        repository
            .put_signed(&format!("{REPORTS_PREFIX}{}.json", self.id), json.into())
            .await
    }

    /// Every stored report, oldest first.
    pub async fn history(repository: &Repository) -> Result<Vec<DrillReport>> {
        repository.check_marker().await?;
        let storage = repository.storage();
        let mut reports = Vec::new();
        for object in storage.list(REPORTS_PREFIX).await? {
            if !object.key.ends_with(".json") {
                continue;
            }
            // With a verify key, an unsigned or forged report is refused like a manifest.
            let bytes = repository.get_verified(&object.key).await?;
            reports.push(serde_json::from_slice::<DrillReport>(&bytes).map_err(|e| {
                Error::integrity(format!("{}: not a drill report: {e}", object.key))
            })?);
        }
        reports.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(reports)
    }
}
