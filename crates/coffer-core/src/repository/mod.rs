//! The repository: the storage plus the layout coffer keeps in it (see `docs/FORMAT.md`).
//!
//! ```text
//! coffer-repository.json        marker: format version, creation time
//! data/ID/NAME[.zst][.age]      artifacts of backup ID
//! manifests/ID.json             one per backup, written last: a backup exists once this exists
//! manifests/ID.json.minisig     its signature (when a signing key is configured), written first
//! ```
//!
//! Every read of the catalog goes through here: the marker is checked once per [`Repository`]
//! (so once per command), every manifest's name is compared with its id, and, with a verify key,
//! every manifest's signature is checked before it is parsed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Validator};
use crate::config::RepositoryConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{FORMAT_VERSION, Manifest, is_valid_backup_id};
use crate::signing::{self, SigningKey, VerifyKey};
use crate::storage::{self, CreateOutcome, Storage};

mod listing;

/// The key of the repository marker.
pub const MARKER_KEY: &str = "coffer-repository.json";
const MANIFESTS: &str = "manifests/";

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    created_at: Timestamp,
    created_by: String,
}

/// Where drill reports live (`ID.json`, `ID.md`, their signatures).
pub const DRILL_REPORTS: &str = "reports/drills/";

/// The backup id that names the newest full backup ([`Repository::resolve`]).
pub const LATEST: &str = "latest";

/// A backup repository.
#[derive(Debug)]
pub struct Repository {
    storage: Box<dyn Storage>,
    signing_key: Option<SigningKey>,
    verify_key: Option<VerifyKey>,
    /// The marker as readers found it (`Some(true)`: present and readable, `Some(false)`:
    /// missing), checked once.
    marker: Mutex<Option<bool>>,
    /// Whether the "signatures are not checked" warning was given.
    warned_unchecked: AtomicBool,
    /// Manifests already read and checked ([`crate::catalog`]); `None`: every listing reads them
    /// all from storage.
    catalog: Option<Arc<Catalog>>,
}

impl Repository {
    /// Opens the repository a configuration names (no I/O yet), with its signing and verify keys
    /// and a manifest cache in memory ([`Repository::with_cache`] puts it on disk).
    pub async fn open(config: &RepositoryConfig, stall: std::time::Duration) -> Result<Self> {
        Ok(
            Self::from_storage(storage::open(&config.location, stall).await?)
                .with_keys(config.signing_key.clone(), config.verify_key.clone())
                .with_cache(None),
        )
    }

    /// Caches the manifests [`Repository::list`] reads ([`crate::catalog`]): under
    /// `state_dir/cache/` when a `state_dir` is given, else in this process's memory.
    pub fn with_cache(mut self, state_dir: Option<&std::path::Path>) -> Self {
        let catalog = match state_dir {
            Some(dir) => Catalog::on_disk(dir, &self.storage.location()),
            None => Catalog::in_memory(),
        };
        self.catalog = Some(Arc::new(catalog));
        self
    }

    /// Wraps an already opened storage (no keys: writes unsigned, reads unchecked).
    pub fn from_storage(storage: Box<dyn Storage>) -> Self {
        Self {
            storage,
            signing_key: None,
            verify_key: None,
            marker: Mutex::new(None),
            warned_unchecked: AtomicBool::new(false),
            catalog: None,
        }
    }

    /// Signs what it writes with `signing_key`; refuses what it reads unless signed by
    /// `verify_key`.
    pub fn with_keys(
        mut self,
        signing_key: Option<SigningKey>,
        verify_key: Option<VerifyKey>,
    ) -> Self {
        self.signing_key = signing_key;
        self.verify_key = verify_key;
        self
    }

    /// The underlying storage.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Writes the marker on first use; refuses a repository of a newer format.
    pub async fn ensure_initialized(&self) -> Result<()> {
        self.initialize().await?;
        *self.marker.lock().expect("marker state") = Some(true);
        Ok(())
    }

    async fn initialize(&self) -> Result<()> {
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

    /// Every backup, oldest first. A manifest that cannot be read, that is not named after its
    /// id, or (with a verify key) that is not signed by that key is an error, never skipped; so
    /// is a marker of a newer format or one that does not parse, and manifests without a marker.
    /// A manifest deleted between the listing and its reading (a concurrent cleanup) is left out.
    ///
    /// The listing decides what exists. With a cache ([`Repository::with_cache`]), a listed
    /// manifest whose listing (and its signature's, with a verify key) is unchanged since it was
    /// read and checked comes from the cache; the others are read from storage, many at a
    /// time, and the error is that of the first failing manifest in listing order, as if they
    /// had been read one after another. It holds every manifest at once: callers that only fold
    /// over them use [`Repository::for_each_manifest`].
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let mut manifests = Vec::new();
        self.for_each_manifest(|manifest| {
            manifests.push(manifest);
            Ok(())
        })
        .await?;
        Ok(manifests)
    }

    /// Reads and checks the listed manifest at `key` from storage, as every read does, and
    /// caches it; `None` if it was deleted meanwhile.
    async fn read_listed(&self, key: &str, validator: &Validator) -> Result<Option<Manifest>> {
        let bytes = match self.storage.get_bytes(key).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if self.check_signature(key, &bytes).await? == Checked::Vanished {
            return Ok(None);
        }
        let manifest = Manifest::from_json(key, &bytes)?;
        check_name(key, &manifest)?;
        if let Some(catalog) = &self.catalog {
            catalog.store(&manifest.id, validator, &bytes, &manifest);
        }
        Ok(Some(manifest))
    }

    /// The manifest of backup `id`, or of the newest full backup for `latest`: the one place
    /// `latest` is resolved.
    pub async fn resolve(&self, id: &str) -> Result<Manifest> {
        if id != LATEST {
            return self.manifest(id).await;
        }
        let mut newest = None;
        self.for_each_manifest(|m| {
            crate::manifest::keep_newest_full(&mut newest, m);
            Ok(())
        })
        .await?;
        newest.ok_or_else(|| {
            Error::not_found(format!("no full backup in {}", self.storage.location()))
        })
    }

    /// The manifest of backup `id`.
    pub async fn manifest(&self, id: &str) -> Result<Manifest> {
        if !is_valid_backup_id(id) {
            return Err(Error::config(format!("{id:?} is not a backup id")));
        }
        let marker = self.marker_for_reading().await?;
        let key = Self::manifest_key(id);
        let not_found =
            || Error::not_found(format!("no backup {id} in {}", self.storage.location()));
        let bytes = self.storage.get_bytes(&key).await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                not_found()
            } else {
                e
            }
        })?;
        refuse_without_marker(marker, &key)?;
        if self.check_signature(&key, &bytes).await? == Checked::Vanished {
            return Err(not_found());
        }
        let manifest = Manifest::from_json(&key, &bytes)?;
        check_name(&key, &manifest)?;
        Ok(manifest)
    }

    /// For readers of objects other than manifests: refuses a marker that does not parse or is of
    /// a newer format (a missing one is an empty repository).
    pub async fn check_marker(&self) -> Result<()> {
        self.marker_for_reading().await.map(|_| ())
    }

    /// Whether the marker is there (`false`: missing), refusing one that does not parse or is
    /// of a newer format. Read once; later calls use what the first one found.
    async fn marker_for_reading(&self) -> Result<bool> {
        if let Some(present) = *self.marker.lock().expect("marker state") {
            return Ok(present);
        }
        let present = match self.storage.get_bytes(MARKER_KEY).await {
            Ok(bytes) => {
                check_marker(&bytes)?;
                true
            }
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        *self.marker.lock().expect("marker state") = Some(present);
        Ok(present)
    }

    /// With a verify key: refuses `bytes` read from `key` unless `KEY.minisig` is a signature of
    /// them by that key. Without one: warns, once, that nothing is checked.
    async fn check_signature(&self, key: &str, bytes: &[u8]) -> Result<Checked> {
        let Some(verify_key) = &self.verify_key else {
            self.warn_unchecked();
            return Ok(Checked::Signed);
        };
        let signature_key = signing::signature_key(key);
        let signature = match self.storage.get_bytes(&signature_key).await {
            Ok(signature) => signature,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Deletion removes the object first, then its signature: if the object is gone
                // too, it was deleted after it was read, not written unsigned.
                return match self.storage.get_bytes(key).await {
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(Checked::Vanished),
                    Err(e) => Err(e),
                    Ok(_) => Err(Error::integrity(format!(
                        "{key} is not signed (no {signature_key}) and [repository] verify_key \
                         requires a signature by key {}: refusing it",
                        verify_key.key_id()
                    ))),
                };
            }
            Err(e) => return Err(e),
        };
        verify_key.verify(bytes, &signature).map_err(|problem| {
            Error::integrity(format!(
                "{key}: {problem} ({signature_key}): it was changed, or not written with this \
                 repository's signing key; refusing it"
            ))
        })?;
        Ok(Checked::Signed)
    }

    /// Without a verify key: warns, once, that signatures are not checked.
    fn warn_unchecked(&self) {
        if self.verify_key.is_none() && !self.warned_unchecked.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "signatures are not checked ([repository] verify_key is not set): a manifest \
                 or drill report written by anyone with write access to the storage is trusted"
            );
        }
    }

    /// Stores a small object that is not a backup (a drill report), signed when a signing key
    /// is configured: the signature first, so the object never exists unsigned.
    pub async fn put_signed(&self, key: &str, body: Bytes) -> Result<()> {
        if let Some(signing_key) = &self.signing_key {
            let signature = signing_key.sign(&body, &signing::trusted_comment(key))?;
            self.storage
                .put(&signing::signature_key(key), Bytes::from(signature))
                .await?;
        }
        self.storage.put(key, body).await
    }

    /// Reads a small object that is not a backup (a drill report) with the checks every read
    /// gets: the marker, and with a verify key the object's signature.
    pub async fn get_verified(&self, key: &str) -> Result<Bytes> {
        let marker = self.marker_for_reading().await?;
        let bytes = self.storage.get_bytes(key).await?;
        refuse_without_marker(marker, key)?;
        if self.check_signature(key, &bytes).await? == Checked::Vanished {
            return Err(Error::not_found(format!(
                "{key} was deleted while it was read"
            )));
        }
        Ok(bytes)
    }

    /// Writes a manifest: the last step of every backup. Never replaces an existing one, and
    /// writes nothing once the job is cancelled.
    pub async fn write_manifest(
        &self,
        manifest: &Manifest,
        cancel: &crate::cancel::Cancel,
    ) -> Result<()> {
        self.write_once_signed(
            &Self::manifest_key(&manifest.id),
            manifest.to_json(),
            cancel,
        )
        .await
    }

    /// Writes `body` at `key`, the last step of a job that records something (a backup's
    /// manifest, a file snapshot's): signed when a signing key is configured, signature first;
    /// never replacing an existing object (a retried write that finds its own body succeeds);
    /// nothing written once the job is cancelled.
    pub async fn write_once_signed(
        &self,
        key: &str,
        body: Vec<u8>,
        cancel: &crate::cancel::Cancel,
    ) -> Result<()> {
        // A cancelled job records nothing, even if its last step happened to finish.
        cancel.check()?;
        // The signature first: a manifest never exists unsigned when a key is configured (an
        // interruption in between leaves a signature without a manifest, which counts for nothing).
        if let Some(signing_key) = &self.signing_key {
            self.write_signature(signing_key, key, &body).await?;
        }
        match self
            .storage
            .put_if_absent(key, Bytes::from(body.clone()))
            .await?
        {
            CreateOutcome::Created => Ok(()),
            // A retried PUT whose first attempt landed sees its own manifest: that is success.
            CreateOutcome::AlreadyExists
                if self.storage.get_bytes(key).await?.as_ref() == body.as_slice() =>
            {
                Ok(())
            }
            CreateOutcome::AlreadyExists => Err(Error::storage(format!(
                "{key} already exists with other content"
            ))),
        }
    }

    /// Writes the signature of the manifest `body` about to be created at `key`, create-if-absent.
    async fn write_signature(
        &self,
        signing_key: &SigningKey,
        key: &str,
        body: &[u8],
    ) -> Result<()> {
        let signature_key = signing::signature_key(key);
        let signature = signing_key.sign(body, &signing::trusted_comment(key))?;
        match self
            .storage
            .put_if_absent(&signature_key, Bytes::from(signature.clone()))
            .await?
        {
            CreateOutcome::Created => Ok(()),
            CreateOutcome::AlreadyExists => {
                // A retried write whose first attempt landed: its signature signs this very body.
                let existing = self.storage.get_bytes(&signature_key).await?;
                if signing_key.verify_key().verify(body, &existing).is_ok() {
                    return Ok(());
                }
                match self.storage.get_bytes(key).await {
                    // The signature of a manifest that exists is never replaced: creating the
                    // manifest reports the conflict.
                    Ok(_) => Ok(()),
                    // Left by a backup of this id that never got its manifest.
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        self.storage
                            .put(&signature_key, Bytes::from(signature))
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Removes a backup: its manifest first (so it is never listed with objects missing), then
    /// its signature, then its objects.
    pub async fn remove_backup(&self, id: &str) -> Result<()> {
        if !is_valid_backup_id(id) {
            return Err(Error::config(format!("{id:?} is not a backup id")));
        }
        let key = Self::manifest_key(id);
        self.storage.delete(&key).await?;
        self.storage.delete(&signing::signature_key(&key)).await?;
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

/// The id a manifest key names (`manifests/ID.json`), if it is one.
fn manifest_id(key: &str) -> Option<&str> {
    key.strip_prefix(MANIFESTS)?
        .strip_suffix(".json")
        .filter(|id| is_valid_backup_id(id))
}

/// What a signature check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Signed by the verify key, or not checked (no verify key).
    Signed,
    /// The object was deleted after it was read: there is nothing to check any more.
    Vanished,
}

/// Objects without a marker are not a repository this coffer made (or its marker was deleted):
/// readers refuse them rather than guess. No marker and nothing in it is an empty repository.
fn refuse_without_marker(marker: bool, key: &str) -> Result<()> {
    if marker {
        return Ok(());
    }
    Err(Error::integrity(format!(
        "{MARKER_KEY} is missing, but {key} exists: this is not a coffer repository, or its \
         marker was deleted; refusing to read it"
    )))
}

/// A manifest is named after the backup it describes: a copy under another name (or a renamed
/// one) would otherwise be listed as a second backup.
fn check_name(key: &str, manifest: &Manifest) -> Result<()> {
    if !is_valid_backup_id(&manifest.id) {
        return Err(Error::integrity(format!(
            "{key}: {:?} is not a backup id",
            manifest.id
        )));
    }
    if key != Repository::manifest_key(&manifest.id) {
        return Err(Error::integrity(format!(
            "{key} holds the manifest of {}, which belongs in {}: a manifest copied or renamed; \
             refusing it (remove the copy, or give it back its name)",
            manifest.id,
            Repository::manifest_key(&manifest.id)
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::Cancel;
    use crate::manifest::{BackupKind, SourceInfo};
    use crate::storage::LocalStorage;

    fn keys() -> (tempfile::TempDir, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let generated = signing::generate_key_pair(dir.path()).unwrap();
        let key = SigningKey::from_file(&generated.secret_key_file).unwrap();
        (dir, key)
    }

    fn repository(
        root: &std::path::Path,
        signing: Option<&SigningKey>,
        verify: bool,
    ) -> Repository {
        Repository::from_storage(Box::new(LocalStorage::new(root.to_path_buf()))).with_keys(
            signing.cloned(),
            verify.then(|| signing.expect("a verify key needs a key").verify_key()),
        )
    }

    fn manifest(id: &str) -> Manifest {
        let source = SourceInfo {
            host: "127.0.0.1".into(),
            port: 3306,
            server_version: "10.11".into(),
            server_id: 1,
            dump_tool: "mariadb-dump".into(),
        };
        Manifest::finished_now(id, BackupKind::Full, Timestamp::now(), source)
    }

    const ID: &str = "20261126T182103Z-full-a44d";

    #[tokio::test]
    async fn signed_manifests_are_written_signature_first_and_checked_on_every_read() {
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key) = keys();
        let writer = repository(dir.path(), Some(&key), false);
        writer.ensure_initialized().await.unwrap();
        let written = manifest(ID);
        writer
            .write_manifest(&written, &Cancel::new())
            .await
            .unwrap();
        // A retried write of the same manifest is a success and keeps a valid signature.
        writer
            .write_manifest(&written, &Cancel::new())
            .await
            .unwrap();
        let stored = std::fs::read(dir.path().join(format!("manifests/{ID}.json"))).unwrap();
        let signature =
            std::fs::read(dir.path().join(format!("manifests/{ID}.json.minisig"))).unwrap();
        let comment = key.verify_key().verify(&stored, &signature).unwrap();
        assert!(
            comment.contains(&format!("file:manifests/{ID}.json")),
            "{comment}"
        );

        let reader = repository(dir.path(), Some(&key), true);
        assert_eq!(reader.list().await.unwrap().len(), 1);
        assert_eq!(reader.manifest(ID).await.unwrap().id, ID);

        // Changed: refused by list and by id, naming the object.
        let path = dir.path().join(format!("manifests/{ID}.json"));
        let forged = String::from_utf8(stored.clone())
            .unwrap()
            .replace("127.0.0.1", "10.6.6.6");
        std::fs::write(&path, forged).unwrap();
        for err in [
            repository(dir.path(), Some(&key), true)
                .list()
                .await
                .unwrap_err(),
            repository(dir.path(), Some(&key), true)
                .manifest(ID)
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Integrity);
            assert!(
                err.to_string().contains(&format!("manifests/{ID}.json")),
                "{err}"
            );
        }
        std::fs::write(&path, &stored).unwrap();

        // Unsigned: refused with a verify key, read (with one warning) without.
        std::fs::remove_file(dir.path().join(format!("manifests/{ID}.json.minisig"))).unwrap();
        let err = repository(dir.path(), Some(&key), true)
            .list()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is not signed"), "{err}");
        let unchecked = repository(dir.path(), None, false);
        assert_eq!(unchecked.list().await.unwrap().len(), 1);
        assert!(unchecked.warned_unchecked.load(Ordering::Relaxed));

        // Removing a backup removes its signature too.
        writer.remove_backup(ID).await.unwrap();
        assert!(
            !dir.path()
                .join(format!("manifests/{ID}.json.minisig"))
                .exists()
        );
        assert!(writer.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_retried_manifest_write_keeps_its_signature_and_a_leftover_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key) = keys();
        let writer = repository(dir.path(), Some(&key), true);
        writer.ensure_initialized().await.unwrap();
        // A signature left by an attempt that never wrote its manifest (another body).
        let mut earlier = manifest(ID);
        earlier.databases = vec!["other".into()];
        let stale = key.sign(&earlier.to_json(), "stale").unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::write(
            dir.path().join(format!("manifests/{ID}.json.minisig")),
            stale,
        )
        .unwrap();
        let manifest = manifest(ID);
        writer
            .write_manifest(&manifest, &Cancel::new())
            .await
            .unwrap();
        // The same manifest again (a retried PUT whose first attempt landed): still fine.
        writer
            .write_manifest(&manifest, &Cancel::new())
            .await
            .unwrap();
        assert_eq!(writer.list().await.unwrap(), vec![manifest.clone()]);
        // Another manifest under the same id: refused, and the existing signature untouched.
        let signature =
            std::fs::read(dir.path().join(format!("manifests/{ID}.json.minisig"))).unwrap();
        let err = writer
            .write_manifest(&earlier, &Cancel::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(format!("manifests/{ID}.json.minisig"))).unwrap(),
            signature
        );
        assert_eq!(writer.manifest(ID).await.unwrap(), manifest);
    }

    #[tokio::test]
    async fn readers_check_the_marker_once_and_refuse_what_they_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing at all: an empty repository.
        assert!(
            repository(dir.path(), None, false)
                .list()
                .await
                .unwrap()
                .is_empty()
        );
        let writer = repository(dir.path(), None, false);
        writer.ensure_initialized().await.unwrap();
        writer
            .write_manifest(&manifest(ID), &Cancel::new())
            .await
            .unwrap();
        let marker = dir.path().join(MARKER_KEY);
        let original = std::fs::read_to_string(&marker).unwrap();
        for (bytes, says) in [
            (
                original.replace("\"format_version\": 1", "\"format_version\": 2"),
                "upgrade coffer",
            ),
            (
                "{\"format_version\": 1,".to_string(),
                "not a coffer repository marker",
            ),
        ] {
            std::fs::write(&marker, bytes).unwrap();
            for err in [
                repository(dir.path(), None, false)
                    .list()
                    .await
                    .unwrap_err(),
                repository(dir.path(), None, false)
                    .manifest(ID)
                    .await
                    .unwrap_err(),
            ] {
                assert_eq!(err.kind(), ErrorKind::Integrity);
                assert!(
                    err.to_string().contains(MARKER_KEY) && err.to_string().contains(says),
                    "{err}"
                );
            }
        }
        std::fs::remove_file(&marker).unwrap();
        let err = repository(dir.path(), None, false)
            .list()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
        // Checked once: a marker that breaks after the first read is not read again.
        std::fs::write(&marker, &original).unwrap();
        let reader = repository(dir.path(), None, false);
        reader.list().await.unwrap();
        std::fs::write(&marker, "broken").unwrap();
        reader.list().await.unwrap();
        reader.manifest(ID).await.unwrap();
    }

    #[tokio::test]
    async fn a_copied_manifest_is_refused_and_an_unknown_kind_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = repository(dir.path(), None, false);
        writer.ensure_initialized().await.unwrap();
        writer
            .write_manifest(&manifest(ID), &Cancel::new())
            .await
            .unwrap();
        let manifests = dir.path().join("manifests");
        let copy = manifests.join("20300101T000000Z-full-beef.json");
        std::fs::copy(manifests.join(format!("{ID}.json")), &copy).unwrap();
        let err = writer.list().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(
            err.to_string().contains("manifests/20300101T000000Z-full-beef.json holds the manifest of 20261126T182103Z-full-a44d"),
            "{err}"
        );
        std::fs::remove_file(&copy).unwrap();

        let unknown = "20300101T000000Z-snapshot-0001";
        std::fs::write(
            manifests.join(format!("{unknown}.json")),
            format!(
                r#"{{"format_version": 1, "id": "{unknown}", "kind": "snapshot",
                    "started_at": "2030-01-01T00:00:00Z", "finished_at": "2030-01-01T00:00:05Z",
                    "artifacts": {{"of": "a shape this coffer does not know"}}}}"#
            ),
        )
        .unwrap();
        let listed = writer.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].id, unknown);
        assert_eq!(listed[1].kind, BackupKind::Unknown);
        assert_eq!(listed[1].kind.as_str(), "unknown");
        assert_eq!(listed[1].duration_seconds, 5.0);
        assert!(listed[1].artifacts.is_empty());
        // Even in the shape of a known kind, nothing but the header of an unknown one is read.
        let mut shaped = manifest("20300101T000001Z-snapshot-0002");
        shaped.databases = vec!["app".into()];
        let text = String::from_utf8(shaped.to_json())
            .unwrap()
            .replace("\"kind\": \"full\"", "\"kind\": \"snapshot\"");
        std::fs::write(manifests.join(format!("{}.json", shaped.id)), text).unwrap();
        let listed = writer.list().await.unwrap();
        assert_eq!(listed.len(), 3);
        let read = listed.iter().find(|m| m.id == shaped.id).unwrap();
        assert_eq!(read.kind, BackupKind::Unknown);
        assert!(read.databases.is_empty());
        // A known kind that is malformed is still an error.
        std::fs::write(
            manifests.join("20300101T000000Z-full-0002.json"),
            r#"{"format_version": 1, "id": "20300101T000000Z-full-0002", "kind": "full", "started_at": "2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let err = writer.list().await.unwrap_err();
        assert!(err.to_string().contains("malformed manifest"), "{err}");
    }

    /// A folder that counts the manifests it is asked for.
    #[derive(Debug)]
    struct Counting {
        inner: LocalStorage,
        manifest_gets: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Storage for Counting {
        fn location(&self) -> String {
            self.inner.location()
        }
        async fn put(&self, key: &str, body: Bytes) -> Result<()> {
            self.inner.put(key, body).await
        }
        async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<CreateOutcome> {
            self.inner.put_if_absent(key, body).await
        }
        async fn put_stream(&self, key: &str, body: storage::BodyStream) -> Result<u64> {
            self.inner.put_stream(key, body).await
        }
        async fn get(&self, key: &str) -> Result<storage::ObjectReader> {
            if key.starts_with(MANIFESTS) {
                self.manifest_gets.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            start: u64,
            len: u64,
        ) -> Result<storage::ObjectReader> {
            self.inner.get_range(key, start, len).await
        }
        async fn head(&self, key: &str) -> Result<storage::ObjectMeta> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<storage::ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn probe(&self) -> Result<storage::Capabilities> {
            self.inner.probe().await
        }
    }

    fn cached(
        root: &std::path::Path,
        state: Option<&std::path::Path>,
        key: &SigningKey,
        verify: Option<VerifyKey>,
    ) -> (Repository, Arc<std::sync::atomic::AtomicUsize>) {
        let manifest_gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = Counting {
            inner: LocalStorage::new(root.to_path_buf()),
            manifest_gets: Arc::clone(&manifest_gets),
        };
        let repository = Repository::from_storage(Box::new(counting))
            .with_keys(Some(key.clone()), verify)
            .with_cache(state);
        (repository, manifest_gets)
    }

    fn gets(manifest_gets: &std::sync::atomic::AtomicUsize) -> usize {
        manifest_gets.swap(0, Ordering::Relaxed)
    }

    #[tokio::test]
    async fn cached_manifests_are_read_once_and_only_while_the_listing_and_key_agree() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let (_keys, key) = keys();
        let (_other_keys, other) = keys();
        let verify = Some(key.verify_key());
        let (writer, _) = cached(dir.path(), None, &key, None);
        writer.ensure_initialized().await.unwrap();
        let ids: Vec<String> = (0..80)
            .map(|i| format!("20261126T18{:02}{:02}Z-full-{i:04x}", i / 60, i % 60))
            .collect();
        for id in &ids {
            writer
                .write_manifest(&manifest(id), &Cancel::new())
                .await
                .unwrap();
        }
        let fresh = repository(dir.path(), Some(&key), true)
            .list()
            .await
            .unwrap();
        assert_eq!(fresh.len(), 80);

        // Cold: every manifest and signature read once, concurrently, in the same order.
        let (cold, counting) = cached(dir.path(), Some(state.path()), &key, verify.clone());
        assert_eq!(cold.list().await.unwrap(), fresh);
        assert_eq!(gets(&counting), 160);
        // The same process again, and another process: nothing read but the listing.
        assert_eq!(cold.list().await.unwrap(), fresh);
        assert_eq!(gets(&counting), 0);
        let (warm, counting) = cached(dir.path(), Some(state.path()), &key, verify.clone());
        assert_eq!(warm.list().await.unwrap(), fresh);
        assert_eq!(gets(&counting), 0);
        let in_memory = cached(dir.path(), None, &key, verify.clone());
        in_memory.0.list().await.unwrap();
        in_memory.0.list().await.unwrap();
        assert_eq!(gets(&in_memory.1), 160);

        // Another verify key is not served what this one checked: refused as before.
        let (stranger, counting) = cached(
            dir.path(),
            Some(state.path()),
            &key,
            Some(other.verify_key()),
        );
        let err = stranger.list().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(gets(&counting) > 0);

        // A replaced manifest is read again (and refused); of two bad ones, the first in listing
        // order is named, as a sequential read would.
        let path = |id: &str| dir.path().join(format!("manifests/{id}.json"));
        let original = std::fs::read_to_string(path(&ids[70])).unwrap();
        std::fs::write(path(&ids[70]), original.replace("127.0.0.1", "10.6.6.6")).unwrap();
        std::fs::write(path(&ids[75]), "{}").unwrap();
        for _ in 0..3 {
            let (reader, counting) = cached(dir.path(), Some(state.path()), &key, verify.clone());
            let err = reader.list().await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Integrity);
            assert!(
                err.to_string()
                    .contains(&format!("manifests/{}.json", ids[70])),
                "{err}"
            );
            assert!(gets(&counting) >= 2);
        }
        std::fs::remove_file(path(&ids[75])).unwrap();
        std::fs::remove_file(
            dir.path()
                .join(format!("manifests/{}.json.minisig", ids[75])),
        )
        .unwrap();
        std::fs::write(path(&ids[70]), &original).unwrap();
        // Whole again: read again, and cached, by the next listing. (A listing that fails stops
        // reading ahead, so whether a refused listing got as far as ids[70] is a matter of timing.)
        let (reader, counting) = cached(dir.path(), Some(state.path()), &key, verify.clone());
        assert_eq!(reader.list().await.unwrap().len(), 79);
        assert_eq!(gets(&counting), 2);
        // A signature removed: the cached manifest is not used, it is refused as unsigned.
        let signature = dir
            .path()
            .join(format!("manifests/{}.json.minisig", ids[3]));
        let signature_bytes = std::fs::read(&signature).unwrap();
        std::fs::remove_file(&signature).unwrap();
        let (reader, _) = cached(dir.path(), Some(state.path()), &key, verify.clone());
        let err = reader.list().await.unwrap_err();
        assert!(err.to_string().contains("is not signed"), "{err}");
        std::fs::write(&signature, &signature_bytes).unwrap();

        // Deleted backups are gone whatever the cache holds; a damaged entry is read again.
        writer.remove_backup(&ids[0]).await.unwrap();
        let cache = Catalog::on_disk(state.path(), &dir.path().display().to_string());
        let entry = cache.dir().unwrap().join(format!("{}.entry", ids[1]));
        std::fs::write(&entry, "garbage").unwrap();
        let (reader, counting) = cached(dir.path(), Some(state.path()), &key, verify.clone());
        let listed = reader.list().await.unwrap();
        assert_eq!(listed.len(), 78);
        assert!(listed.iter().all(|m| m.id != ids[0] && m.id != ids[75]));
        // ids[1] (damaged) and ids[3] (its signature rewritten) are read again, manifest and
        // signature each.
        assert_eq!(gets(&counting), 4);
        assert!(
            !cache
                .dir()
                .unwrap()
                .join(format!("{}.entry", ids[0]))
                .exists()
        );
        let (reader, counting) = cached(dir.path(), Some(state.path()), &key, verify);
        assert_eq!(reader.list().await.unwrap(), listed);
        assert_eq!(gets(&counting), 0);
    }

    #[tokio::test]
    async fn reports_are_signed_before_they_are_stored_and_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let (_keys, key) = keys();
        let repo = repository(dir.path(), Some(&key), true);
        repo.ensure_initialized().await.unwrap();
        let report_key = "reports/drills/20300101T000000Z-drill-0001.json";
        repo.put_signed(report_key, Bytes::from_static(b"{}\n"))
            .await
            .unwrap();
        assert_eq!(
            repo.get_verified(report_key).await.unwrap().as_ref(),
            b"{}\n"
        );
        std::fs::write(dir.path().join(report_key), "{\"verdict\": \"pass\"}\n").unwrap();
        let err = repository(dir.path(), Some(&key), true)
            .get_verified(report_key)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(err.to_string().contains(report_key), "{err}");
        // Without a signing key reports are stored unsigned, as before.
        let unsigned = "reports/drills/20300101T000000Z-drill-0002.json";
        repository(dir.path(), None, false)
            .put_signed(unsigned, Bytes::from_static(b"{}\n"))
            .await
            .unwrap();
        assert!(!dir.path().join(format!("{unsigned}.minisig")).exists());
    }
}
