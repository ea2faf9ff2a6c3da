//! `[retention.full]`, `[retention.binlog]`, `[retention.drill]`, `[retention.files]`,
//! `[retention.config]`: how long each kind is kept.

use super::*;
use crate::retention::{Policy, parse_span};

/// One policy per kind. A table that is present replaces that kind's defaults entirely: with
/// `[retention.full] keep_last = 2` alone, exactly the newest two full backups are kept.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Full backups: the runbook's 30 days by default.
    pub full: Policy,
    /// Binlog files and segments: 7 days by default (what a kept full backup needs to roll
    /// forward is kept whatever this says).
    pub binlog: Policy,
    /// Drill reports: 12 months by default.
    pub drill: Policy,
    /// File snapshots (`[[files]]`): the runbook's 30 days by default.
    pub files: Policy,
    /// Configuration versions (`[[config_backup]]`): the runbook's 12 months by default.
    pub config: Policy,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let within = |span: &str| Policy {
            keep_within: Some(parse_span(span).expect("a valid default span")),
            ..Policy::default()
        };
        Self {
            full: within("30d"),
            binlog: within("7d"),
            drill: within("12 months"),
            files: within("30d"),
            config: within("12 months"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    full: Option<RawPolicy>,
    binlog: Option<RawPolicy>,
    drill: Option<RawPolicy>,
    files: Option<RawPolicy>,
    config: Option<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    keep_within: Option<String>,
    keep_last: Option<usize>,
    keep_daily: Option<usize>,
    keep_weekly: Option<usize>,
    keep_monthly: Option<usize>,
    keep_yearly: Option<usize>,
}

/// Resolves `[retention]`: each kind's table, or its default.
pub(super) fn resolve(ld: &Loader<'_>, raw: Option<RawRetention>) -> Result<RetentionConfig> {
    let raw = raw.unwrap_or_default();
    let defaults = RetentionConfig::default();
    let policy = |kind: &str, raw: Option<RawPolicy>, default: Policy| -> Result<Policy> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        let keep_within = match &raw.keep_within {
            Some(text) => Some(
                parse_span(text)
                    .map_err(|why| ld.fail(&format!("retention.{kind}.keep_within"), &why))?,
            ),
            None => None,
        };
        let policy = Policy {
            keep_within,
            keep_last: raw.keep_last,
            keep_daily: raw.keep_daily,
            keep_weekly: raw.keep_weekly,
            keep_monthly: raw.keep_monthly,
            keep_yearly: raw.keep_yearly,
        };
        if policy.is_empty() {
            // An empty table would keep everything; say so rather than guess what was meant.
            return Err(ld.fail(
                &format!("retention.{kind}"),
                &"the table sets no keep_* rule; remove it for the default, or set one",
            ));
        }
        Ok(policy)
    };
    Ok(RetentionConfig {
        full: policy("full", raw.full, defaults.full)?,
        binlog: policy("binlog", raw.binlog, defaults.binlog)?,
        drill: policy("drill", raw.drill, defaults.drill)?,
        files: policy("files", raw.files, defaults.files)?,
        config: policy("config", raw.config, defaults.config)?,
    })
}
