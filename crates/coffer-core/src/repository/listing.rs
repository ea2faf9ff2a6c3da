//! Listing the catalog: every manifest, handed out one at a time in start order, with at most
//! [`BATCH`] × [`READ_AHEAD`] manifests read ahead, so what a listing holds does not grow with
//! the repository (ten years of a segment a minute is millions of manifests).
//!
//! The storage listing decides what exists ([`crate::catalog`]); each batch of listed manifests
//! is looked up in the cache together (one blocking task for its files), and the ones the cache
//! cannot stand for are read from storage at once.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use super::{MANIFESTS, Repository, check_name, manifest_id, refuse_without_marker};
use crate::catalog::{Stamp, Validator, key_digest};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::signing;

/// How many listed manifests one step of a listing handles: their cache entries are read in
/// one blocking task, and those missing are read from storage concurrently.
const BATCH: usize = 32;
/// How many batches are read ahead of the one being handed out: with [`BATCH`], at most 128
/// manifests in flight or waiting, the cold listing's concurrency.
const READ_AHEAD: usize = 4;

/// One batch being read: its manifests in batch order.
type BatchRead<'a> =
    std::pin::Pin<Box<dyn Future<Output = Vec<Result<Option<Manifest>>>> + Send + 'a>>;

/// One listed manifest: its key, and what the listing says of it and of its signature.
struct Listed {
    key: String,
    manifest: Stamp,
    signature: Option<Stamp>,
}

impl Listed {
    fn validator(&self, verified_by: Option<&str>) -> Validator {
        Validator {
            manifest: self.manifest,
            signature: self.signature,
            verified_by: verified_by.map(str::to_string),
        }
    }
}

impl Repository {
    /// Hands every backup to `visit`, oldest first, and returns how many there were: the
    /// streaming form of [`Repository::list`], with its checks and its cache, holding only the
    /// listing and a bounded read-ahead whatever the count.
    ///
    /// Order: by start, then id. Keys list in id order and ids sort by their start second, so
    /// only manifests of one second are held back to be ordered (a manifest whose `started_at`
    /// disagrees with its id's second keeps its id's place).
    ///
    /// The first manifest that fails (in that order) ends the listing with its error, after
    /// `visit` saw the ones before it; so does the first error `visit` returns.
    pub async fn for_each_manifest<F>(&self, mut visit: F) -> Result<usize>
    where
        F: FnMut(Manifest) -> Result<()> + Send,
    {
        let marker = self.marker_for_reading().await?;
        let listed = self.listed_manifests().await?;
        if let Some(first) = listed.first() {
            refuse_without_marker(marker, &first.key)?;
        }
        let verified_by = self.verify_key.as_ref().map(key_digest);
        let mut chunks = listed.chunks(BATCH);
        // Boxed as `Send` futures: a stream of borrowing futures built by a closure trips the
        // compiler's higher-ranked `Send` check when the listing runs inside a spawned task.
        let mut batches: FuturesOrdered<BatchRead<'_>> = FuturesOrdered::new();
        let mut order = StartOrder::default();
        let mut count = 0;
        loop {
            while batches.len() < READ_AHEAD {
                let Some(batch) = chunks.next() else {
                    break;
                };
                batches.push_back(Box::pin(self.read_batch(batch, verified_by.as_deref())));
            }
            let Some(batch) = batches.next().await else {
                break;
            };
            for read in batch {
                let Some(manifest) = read? else {
                    continue;
                };
                for ready in order.push(manifest) {
                    count += 1;
                    visit(ready)?;
                }
            }
        }
        drop(batches);
        for ready in order.finish() {
            count += 1;
            visit(ready)?;
        }
        self.forget_unlisted(&listed).await;
        Ok(count)
    }

    /// Every `manifests/*.json` listed, with its signature's stamp, in key order.
    async fn listed_manifests(&self) -> Result<Vec<Listed>> {
        let objects = self.storage.list(MANIFESTS).await?;
        let signatures: HashMap<&str, Stamp> = objects
            .iter()
            .filter_map(|o| {
                let key = o.key.strip_suffix(signing::SIGNATURE_SUFFIX)?;
                key.ends_with(".json").then(|| (key, Stamp::of(o)))
            })
            .collect();
        let mut listed: Vec<Listed> = objects
            .iter()
            .filter(|o| o.key.ends_with(".json"))
            .map(|o| Listed {
                key: o.key.clone(),
                manifest: Stamp::of(o),
                signature: signatures.get(o.key.as_str()).copied(),
            })
            .collect();
        listed.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }

    /// Reads one batch, in its order: from the cache what it holds unchanged, the rest from
    /// storage (`None`: deleted since the listing).
    async fn read_batch(
        &self,
        batch: &[Listed],
        verified_by: Option<&str>,
    ) -> Vec<Result<Option<Manifest>>> {
        let validators: Vec<Validator> = batch.iter().map(|l| l.validator(verified_by)).collect();
        let cached = self.cached(batch, &validators).await;
        if cached.iter().any(Option::is_some) {
            // What a fresh read would have warned about, once.
            self.warn_unchecked();
        }
        let reads =
            batch
                .iter()
                .zip(validators)
                .zip(cached)
                .map(|((listed, validator), hit)| async move {
                    match hit {
                        Some(manifest) => Ok(Some(manifest)),
                        None => self.read_listed(&listed.key, &validator).await,
                    }
                });
        futures_util::future::join_all(reads).await
    }

    /// The cached manifest of each listed key that the cache holds unchanged, in batch order.
    async fn cached(&self, batch: &[Listed], validators: &[Validator]) -> Vec<Option<Manifest>> {
        let Some(catalog) = &self.catalog else {
            return vec![None; batch.len()];
        };
        let wanted: Vec<(String, Validator)> = batch
            .iter()
            .zip(validators)
            .map(|(listed, validator)| (listed.key.clone(), validator.clone()))
            .collect();
        let catalog = Arc::clone(catalog);
        // Disk entries are files: read them off the async threads.
        tokio::task::spawn_blocking(move || {
            wanted
                .iter()
                .map(|(key, validator)| {
                    let manifest = catalog.lookup(manifest_id(key)?, key, validator)?;
                    check_name(key, &manifest).ok()?;
                    Some(manifest)
                })
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![None; batch.len()])
    }

    /// Forgets cache entries of manifests the listing no longer shows (backups removed).
    async fn forget_unlisted(&self, listed: &[Listed]) {
        let Some(catalog) = &self.catalog else {
            return;
        };
        // Owned for the blocking task; the set of them is made there, once.
        let ids: Vec<String> = listed
            .iter()
            .filter_map(|l| manifest_id(&l.key).map(str::to_string))
            .collect();
        let catalog = Arc::clone(catalog);
        // Forgetting removed backups touches one file each: off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            catalog.retain(&ids.iter().map(String::as_str).collect())
        })
        .await;
    }
}

/// Puts manifests given in key order into start order: only those of one id second can be out
/// of order, so a second's manifests wait until a later second begins.
#[derive(Debug, Default)]
struct StartOrder {
    pending: Vec<Manifest>,
}

/// The start second an id begins with (`YYYYMMDDTHHMMSSZ`).
fn id_second(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

impl StartOrder {
    /// Takes `manifest`; returns the manifests now known to come before everything after it.
    fn push(&mut self, manifest: Manifest) -> Vec<Manifest> {
        let ready = match self.pending.first() {
            Some(first) if id_second(&first.id) != id_second(&manifest.id) => self.finish(),
            _ => Vec::new(),
        };
        self.pending.push(manifest);
        ready
    }

    /// The manifests still held, in order.
    fn finish(&mut self) -> Vec<Manifest> {
        let mut ready = std::mem::take(&mut self.pending);
        // Ids sort by second only; two backups of one second keep the order they ran in.
        ready.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::StartOrder;
    use crate::manifest::{BackupKind, Manifest, SourceInfo};

    fn started(id: &str, at: i64) -> Manifest {
        let at = jiff::Timestamp::from_second(at).unwrap();
        let mut m = Manifest::finished_now(
            id,
            BackupKind::Full,
            at,
            SourceInfo {
                host: "db".into(),
                port: 3306,
                server_version: "10.11".into(),
                server_id: 1,
                dump_tool: "t".into(),
            },
        );
        m.started_at = at;
        m
    }

    #[test]
    fn backups_of_one_second_come_out_in_the_order_they_ran_and_earlier_seconds_at_once() {
        let mut order = StartOrder::default();
        let mut out = Vec::new();
        // Key order: the suffix decides within a second, the start time does not.
        for m in [
            started("20261201T020000Z-full-aaaa", 100),
            started("20261201T020001Z-full-0001", 201),
            started("20261201T020001Z-full-ffff", 200),
        ] {
            out.extend(order.push(m).into_iter().map(|m| m.id));
        }
        // The first second was handed out as soon as the next one began.
        assert_eq!(out, ["20261201T020000Z-full-aaaa"]);
        out.extend(order.finish().into_iter().map(|m| m.id));
        assert_eq!(
            out,
            [
                "20261201T020000Z-full-aaaa",
                "20261201T020001Z-full-ffff",
                "20261201T020001Z-full-0001"
            ]
        );
    }
}
