//! The repository: the storage plus the layout coffer keeps in it (see `docs/FORMAT.md`).
//!
//! ```text
//! coffer-repository.json        marker: format version, creation time
//! data/ID/NAME[.zst][.age]      artifacts of backup ID
//! manifests/ID.json             one per backup, written last: a backup exists once this exists
//! ```

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::RepositoryConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{FORMAT_VERSION, Manifest, is_valid_backup_id};
use crate::storage::{self, CreateOutcome, Storage};

/// The key of the repository marker.
pub const MARKER_KEY: &str = "coffer-repository.json";
const MANIFESTS: &str = "manifests/";

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    created_at: Timestamp,
    created_by: String,
}

/// A backup repository.
#[derive(Debug)]
pub struct Repository {
    storage: Box<dyn Storage>,
}

impl Repository {
    /// Opens the repository a configuration names (no I/O yet).
    pub async fn open(config: &RepositoryConfig) -> Result<Self> {
        Ok(Self {
            storage: storage::open(&config.location).await?,
        })
    }

    /// Wraps an already opened storage.
    pub fn from_storage(storage: Box<dyn Storage>) -> Self {
        Self { storage }
    }

    /// The underlying storage.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Writes the marker on first use; refuses a repository of a newer format.
    pub async fn ensure_initialized(&self) -> Result<()> {
        match self.storage.get_bytes(MARKER_KEY).await {
            Ok(bytes) => check_marker(&bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let marker = Marker {
                    format_version: FORMAT_VERSION,
                    created_at: Timestamp::now(),
                    created_by: format!("coffer {}", env!("CARGO_PKG_VERSION")),
                };
                let body = serde_json::to_vec_pretty(&marker).expect("marker serializes");
                match self
                    .storage
                    .put_if_absent(MARKER_KEY, Bytes::from(body))
                    .await?
                {
                    CreateOutcome::Created => Ok(()),
                    // Another coffer initialized it meanwhile: check what it wrote.
                    CreateOutcome::AlreadyExists => {
                        check_marker(&self.storage.get_bytes(MARKER_KEY).await?)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Checks the repository answers and, if initialized, is of a format this coffer reads.
    pub async fn check_reachable(&self) -> Result<bool> {
        match self.storage.get_bytes(MARKER_KEY).await {
            Ok(bytes) => check_marker(&bytes).map(|()| true),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Listing proves the location answers even before the first backup.
                self.storage.list(MANIFESTS).await.map(|_| false)
            }
            Err(e) => Err(e),
        }
    }

    /// The key of an artifact of backup `id`.
    pub fn data_key(id: &str, file_name: &str) -> String {
        format!("data/{id}/{file_name}")
    }

    fn manifest_key(id: &str) -> String {
        format!("{MANIFESTS}{id}.json")
    }

    /// Every backup, oldest first. A manifest that cannot be read is an error, never skipped.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let objects = self.storage.list(MANIFESTS).await?;
        let mut manifests = Vec::with_capacity(objects.len());
        for object in objects.iter().filter(|o| o.key.ends_with(".json")) {
            let bytes = self.storage.get_bytes(&object.key).await?;
            manifests.push(Manifest::from_json(&object.key, &bytes)?);
        }
        // Ids sort by second only; two backups of one second keep the order they ran in.
        manifests.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(manifests)
    }

    /// The manifest of backup `id`.
    pub async fn manifest(&self, id: &str) -> Result<Manifest> {
        if !is_valid_backup_id(id) {
            return Err(Error::config(format!("{id:?} is not a backup id")));
        }
        let key = Self::manifest_key(id);
        let bytes = self.storage.get_bytes(&key).await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::not_found(format!("no backup {id} in {}", self.storage.location()))
            } else {
                e
            }
        })?;
        let manifest = Manifest::from_json(&key, &bytes)?;
        if manifest.id != id {
            return Err(Error::integrity(format!(
                "{key} holds the manifest of {}",
                manifest.id
            )));
        }
        Ok(manifest)
    }

    /// Writes a manifest: the last step of every backup. Never replaces an existing one.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let key = Self::manifest_key(&manifest.id);
        let body = manifest.to_json();
        match self
            .storage
            .put_if_absent(&key, Bytes::from(body.clone()))
            .await?
        {
            CreateOutcome::Created => Ok(()),
            // A retried PUT whose first attempt landed sees its own manifest: that is success.
            CreateOutcome::AlreadyExists
                if self.storage.get_bytes(&key).await?.as_ref() == body.as_slice() =>
            {
                Ok(())
            }
            CreateOutcome::AlreadyExists => Err(Error::storage(format!(
                "{key} already exists with other content"
            ))),
        }
    }

    /// Removes a backup: its manifest first (so it is never listed with objects missing), then
    /// its objects.
    pub async fn remove_backup(&self, id: &str) -> Result<()> {
        if !is_valid_backup_id(id) {
            return Err(Error::config(format!("{id:?} is not a backup id")));
        }
        self.storage.delete(&Self::manifest_key(id)).await?;
        self.remove_data(id).await?;
        Ok(())
    }

    /// Removes every object under `data/ID/` (the leftovers of a backup that never got its manifest).
    /// Returns the keys removed.
    pub async fn remove_data(&self, id: &str) -> Result<Vec<String>> {
        let objects = self.storage.list(&format!("data/{id}/")).await?;
        let mut removed = Vec::new();
        for object in objects {
            self.storage.delete(&object.key).await?;
            removed.push(object.key);
        }
        Ok(removed)
    }
}

fn check_marker(bytes: &[u8]) -> Result<()> {
    let marker: Marker = serde_json::from_slice(bytes).map_err(|e| {
        Error::integrity(format!("{MARKER_KEY}: not a coffer repository marker: {e}"))
    })?;
    if marker.format_version > FORMAT_VERSION {
        return Err(Error::integrity(format!(
            "{MARKER_KEY}: repository format {} is newer than this coffer reads ({FORMAT_VERSION}); upgrade coffer",
            marker.format_version
        )));
    }
    Ok(())
}
