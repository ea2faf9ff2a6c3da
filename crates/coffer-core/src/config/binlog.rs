//! `[binlog]`: continuous binlog archiving (`coffer binlog stream`).

use super::*;

/// Continuous binlog archiving settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogConfig {
    /// How often the growing active binlog is shipped: the recovery point is at most about this
    /// old while the stream runs.
    pub ship_interval: std::time::Duration,
    /// The server id the stream presents to the source as a replica. It must differ from the
    /// source's and from every other replica's: the source drops an older connection that
    /// presents the same id.
    pub stream_server_id: u32,
}

impl Default for BinlogConfig {
    fn default() -> Self {
        Self {
            ship_interval: std::time::Duration::from_secs(5),
            stream_server_id: DEFAULT_STREAM_SERVER_ID,
        }
    }
}

/// The replica server id `coffer binlog stream` uses unless `[binlog] stream_server_id` is set.
pub const DEFAULT_STREAM_SERVER_ID: u32 = 4_012_023_001;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBinlog {
    ship_interval_seconds: Option<u64>,
    stream_server_id: Option<u32>,
}

/// Resolves the `[binlog]` section against the environment.
pub(super) fn resolve(ld: &Loader<'_>, raw: Option<RawBinlog>) -> Result<BinlogConfig> {
    let raw_binlog = raw.unwrap_or_default();
    let binlog = BinlogConfig {
        ship_interval: match raw_binlog.ship_interval_seconds {
            Some(0) => {
                return Err(ld.fail("binlog.ship_interval_seconds", &"must be at least 1 second"));
            }
            Some(s) => std::time::Duration::from_secs(s),
            None => BinlogConfig::default().ship_interval,
        },
        stream_server_id: match raw_binlog.stream_server_id {
            Some(0) => {
                return Err(ld.fail(
                    "binlog.stream_server_id",
                    &"0 is not a valid replica server id",
                ));
            }
            Some(id) => id,
            None => DEFAULT_STREAM_SERVER_ID,
        },
    };
    Ok(binlog)
}
