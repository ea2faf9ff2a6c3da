//! Chunk ids, and the key they are made with.
//!
//! A chunk's id is HMAC-SHA256 of its plain bytes under the repository's **chunk-id key**, a
//! random 32-byte secret. A plain SHA-256 would let anyone who can list the bucket check whether
//! a file they know (a leaked contract, a known image) is in it: hash it, look for the id. Keyed,
//! the ids mean nothing without the key.
//!
//! The backup host holds only the age *public* key (the recipient), so it cannot read a secret
//! back from the repository. Hence two copies of the key:
//!
//! - in the repository, `keys/chunk-id.json.age`, encrypted to the recipient, so a fresh host
//!   can [`recover`] it with the age identity (the private key an operator keeps for restores);
//!   without a recipient, `keys/chunk-id.json` in clear, which gives the protection up to anyone
//!   who can read the bucket (and with it the data, which is in clear too);
//! - on the backup host, `STATE_DIR/keys/REPO/chunk-id.json` (mode `0600`, `REPO` a digest of the
//!   repository's location), which [`load_or_create`] uses; it records the SHA-256 of the
//!   repository copy it belongs to, so a host whose key is not the repository's finds out instead
//!   of writing chunks no other host will ever match.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use coffer_core::error::{Error, ErrorKind, Result};
use coffer_core::storage::{CreateOutcome, Storage};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The key of the encrypted repository copy.
pub const KEY_OBJECT: &str = "keys/chunk-id.json.age";
/// The key of the repository copy when no recipient is configured (in clear).
pub const PLAIN_KEY_OBJECT: &str = "keys/chunk-id.json";
/// The algorithm named in key files.
pub const ALGORITHM: &str = "hmac-sha256";

/// A chunk's id: HMAC-SHA256 of its plain bytes under the [`ChunkIdKey`]. Written as 64
/// lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hexadecimal digits; anything else is an integrity error (ids come from stored
    /// objects).
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id)
            .map_err(|_| Error::integrity(format!("invalid chunk id {text:?}")))?;
        Ok(Self(id))
    }
}

impl std::hash::Hash for ChunkId {
    /// Ids are already uniformly random: their first eight bytes are a good hash.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")));
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

/// The secret chunk ids are made with. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkIdKey([u8; 32]);

impl fmt::Debug for ChunkIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkIdKey(***)")
    }
}

impl ChunkIdKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| Error::other(format!("drawing a random chunk-id key: {e}")))?;
        Ok(Self(key))
    }

    /// A key from its 32 bytes (tests, and key files).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The id of a chunk whose plain bytes are `plain`.
    pub fn id(&self, plain: &[u8]) -> ChunkId {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(plain);
        ChunkId(mac.finalize().into_bytes().into())
    }

    /// The key file as stored in the repository (before encryption): JSON, see `docs/FORMAT.md`.
    pub fn to_json(&self) -> Vec<u8> {
        let file = KeyFile {
            version: 1,
            algorithm: ALGORITHM.into(),
            key: hex::encode(self.0),
        };
        let mut out = serde_json::to_vec_pretty(&file).expect("serializable");
        out.push(b'\n');
        out
    }

    /// Reads a key file; `what` names it in errors.
    pub fn from_json(bytes: &[u8], what: &str) -> Result<Self> {
        let file: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::integrity(format!("{what}: not a chunk-id key file: {e}")))?;
        file.key(what)
    }
}

/// The key file: `{"version": 1, "algorithm": "hmac-sha256", "key": "64 hex digits"}`.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    algorithm: String,
    key: String,
}

impl KeyFile {
    fn key(&self, what: &str) -> Result<ChunkIdKey> {
        if self.version != 1 || self.algorithm != ALGORITHM {
            return Err(Error::integrity(format!(
                "{what}: unsupported chunk-id key (version {}, algorithm {:?})",
                self.version, self.algorithm
            )));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(&self.key, &mut key)
            .map_err(|_| Error::integrity(format!("{what}: the key is not 64 hex digits")))?;
        Ok(ChunkIdKey(key))
    }
}

/// The backup host's copy: the key file plus which repository object it belongs to.
#[derive(Serialize, Deserialize)]
struct LocalKeyFile {
    #[serde(flatten)]
    file: KeyFile,
    /// [`KEY_OBJECT`] or [`PLAIN_KEY_OBJECT`].
    repository_object: String,
    /// SHA-256 of that object's bytes as stored.
    repository_object_sha256: String,
}

/// Where this host keeps its copy of `storage`'s key: `STATE_DIR/keys/REPO/chunk-id.json`,
/// `REPO` the first 16 bytes of SHA-256 of the repository's location, in hex.
pub fn local_key_path(state_dir: &Path, storage: &dyn Storage) -> PathBuf {
    let repo = hex::encode(&Sha256::digest(storage.location().as_bytes())[..16]);
    state_dir.join("keys").join(repo).join("chunk-id.json")
}

/// The repository's chunk-id key, creating it on first use.
///
/// The first host to need one draws a random key, keeps it at [`local_key_path`] and stores it
/// in the repository (encrypted to `recipient`, else in clear with a warning), create-if-absent.
/// After that every run uses the local copy, once it has checked that the repository holds the
/// same key. A host without a local copy of an existing encrypted key must [`recover`] it: that
/// is a configuration error, not a reason to draw another key. A local copy that does not match
/// the repository's is an integrity error.
pub async fn load_or_create(
    storage: &dyn Storage,
    state_dir: &Path,
    recipient: Option<&age::x25519::Recipient>,
) -> Result<ChunkIdKey> {
    let local_path = local_key_path(state_dir, storage);
    // Two rounds at most: a host that loses a creation race adopts (or is told to recover) the
    // winner's key on the second.
    for _ in 0..2 {
        let local = read_local(&local_path)?;
        let encrypted = get_optional(storage, KEY_OBJECT).await?;
        let plain = get_optional(storage, PLAIN_KEY_OBJECT).await?;
        match (local, encrypted, plain) {
            (_, Some(_), Some(_)) => {
                return Err(Error::integrity(format!(
                    "the repository in {} holds both {KEY_OBJECT} and {PLAIN_KEY_OBJECT}: \
                     remove the one that is not the key its chunks were made with",
                    storage.location()
                )));
            }
            (Some(local), Some(object), None) => {
                return check_local(local, KEY_OBJECT, &object, &local_path, storage);
            }
            (Some(local), None, Some(object)) => {
                let repo_key = ChunkIdKey::from_json(&object, PLAIN_KEY_OBJECT)?;
                if local.file.key(&local_path.display().to_string())? != repo_key {
                    return Err(mismatch(&local_path, PLAIN_KEY_OBJECT, storage));
                }
                if recipient.is_some() {
                    tracing::warn!(
                        object = PLAIN_KEY_OBJECT,
                        "the chunk-id key is stored in clear although a recipient is configured"
                    );
                }
                return Ok(repo_key);
            }
            (None, Some(_), None) => {
                return Err(Error::config(format!(
                    "the repository in {} has a chunk-id key ({KEY_OBJECT}) this host does not \
                     hold: recover it with the repository's age identity",
                    storage.location()
                )));
            }
            (None, None, Some(object)) => {
                let key = ChunkIdKey::from_json(&object, PLAIN_KEY_OBJECT)?;
                if recipient.is_some() {
                    tracing::warn!(
                        object = PLAIN_KEY_OBJECT,
                        "the chunk-id key is stored in clear although a recipient is configured"
                    );
                }
                write_local(&local_path, &key, PLAIN_KEY_OBJECT, &object)?;
                return Ok(key);
            }
            (local, None, None) => {
                // A repository that lost its key object (or never had one) gets this host's key
                // back rather than a new one: the chunks it already holds were made with it.
                let key = match local {
                    Some(local) => local.file.key(&local_path.display().to_string())?,
                    None => ChunkIdKey::generate()?,
                };
                let (object_key, object) = match recipient {
                    Some(recipient) => (KEY_OBJECT, encrypt(&key.to_json(), recipient)?),
                    None => {
                        tracing::warn!(
                            object = PLAIN_KEY_OBJECT,
                            "no encryption recipient: the chunk-id key is stored in clear, so \
                             anyone who can read the repository can tell which known files it holds"
                        );
                        (PLAIN_KEY_OBJECT, key.to_json())
                    }
                };
                // Local copy first: a crash between the two leaves a key this host still has.
                write_local(&local_path, &key, object_key, &object)?;
                match storage.put_if_absent(object_key, object.into()).await? {
                    CreateOutcome::Created => return Ok(key),
                    CreateOutcome::AlreadyExists => {
                        let _ = std::fs::remove_file(&local_path);
                    }
                }
            }
        }
    }
    Err(Error::storage(format!(
        "the chunk-id key of {} kept changing while it was being created",
        storage.location()
    ))
    .transient())
}

/// Recovers the repository's key on a host that has none: decrypts [`KEY_OBJECT`] with the
/// repository's age identity (or reads [`PLAIN_KEY_OBJECT`]) and [`install`]s it.
pub async fn recover(
    storage: &dyn Storage,
    state_dir: &Path,
    identity: &age::x25519::Identity,
) -> Result<ChunkIdKey> {
    let (object_key, object, key) = match get_optional(storage, KEY_OBJECT).await? {
        Some(object) => {
            let plain = decrypt(&object, identity, KEY_OBJECT)?;
            let key = ChunkIdKey::from_json(&plain, KEY_OBJECT)?;
            (KEY_OBJECT, object, key)
        }
        None => match get_optional(storage, PLAIN_KEY_OBJECT).await? {
            Some(object) => {
                let key = ChunkIdKey::from_json(&object, PLAIN_KEY_OBJECT)?;
                (PLAIN_KEY_OBJECT, object, key)
            }
            None => {
                return Err(Error::not_found(format!(
                    "the repository in {} has no chunk-id key ({KEY_OBJECT})",
                    storage.location()
                )));
            }
        },
    };
    write_local(
        &local_key_path(state_dir, storage),
        &key,
        object_key,
        &object,
    )?;
    Ok(key)
}

/// Installs `key` as this host's copy of the repository's key, after checking it against the
/// repository copy where that can be read without a secret (a plain key object must hold the
/// same key). An encrypted copy cannot be checked here: use [`recover`] when the identity is
/// at hand.
pub async fn install(storage: &dyn Storage, state_dir: &Path, key: &ChunkIdKey) -> Result<()> {
    let path = local_key_path(state_dir, storage);
    if let Some(object) = get_optional(storage, PLAIN_KEY_OBJECT).await? {
        if ChunkIdKey::from_json(&object, PLAIN_KEY_OBJECT)? != *key {
            return Err(mismatch(&path, PLAIN_KEY_OBJECT, storage));
        }
        return write_local(&path, key, PLAIN_KEY_OBJECT, &object);
    }
    match get_optional(storage, KEY_OBJECT).await? {
        Some(object) => write_local(&path, key, KEY_OBJECT, &object),
        None => Err(Error::not_found(format!(
            "the repository in {} has no chunk-id key to install one for",
            storage.location()
        ))),
    }
}

fn check_local(
    local: LocalKeyFile,
    object_key: &str,
    object: &[u8],
    local_path: &Path,
    storage: &dyn Storage,
) -> Result<ChunkIdKey> {
    if local.repository_object != object_key
        || local.repository_object_sha256 != hex::encode(Sha256::digest(object))
    {
        return Err(mismatch(local_path, object_key, storage));
    }
    local.file.key(&local_path.display().to_string())
}

fn mismatch(local_path: &Path, object_key: &str, storage: &dyn Storage) -> Error {
    Error::integrity(format!(
        "the chunk-id key in {} is not the one the repository in {} holds ({object_key}): \
         recover the repository's key with its age identity",
        local_path.display(),
        storage.location()
    ))
}

async fn get_optional(storage: &dyn Storage, key: &str) -> Result<Option<Vec<u8>>> {
    match storage.get_bytes(key).await {
        Ok(bytes) => Ok(Some(bytes.to_vec())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.context(format!("reading {key}"))),
    }
}

fn read_local(path: &Path) -> Result<Option<LocalKeyFile>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::integrity(format!("{}: not a chunk-id key file: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::other(format!("reading {}: {e}", path.display()))),
    }
}

/// Writes the local copy: folders `0700`, the file `0600`, through a temporary file and rename.
fn write_local(path: &Path, key: &ChunkIdKey, object_key: &str, object: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let local = LocalKeyFile {
        file: KeyFile {
            version: 1,
            algorithm: ALGORITHM.into(),
            key: hex::encode(key.0),
        },
        repository_object: object_key.into(),
        repository_object_sha256: hex::encode(Sha256::digest(object)),
    };
    let io = |e: std::io::Error| Error::other(format!("writing {}: {e}", path.display()));
    let dir = path.parent().expect("a file in a folder");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let temp = dir.join(".chunk-id.json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io)?;
    let mut bytes = serde_json::to_vec_pretty(&local).expect("serializable");
    bytes.push(b'\n');
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

fn encrypt(plain: &[u8], recipient: &age::x25519::Recipient) -> Result<Vec<u8>> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .map_err(|e| Error::other(format!("encrypting the chunk-id key: {e}")))?;
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| Error::other(format!("encrypting the chunk-id key: {e}")))?;
    writer.write_all(plain)?;
    writer.finish()?;
    Ok(out)
}

fn decrypt(object: &[u8], identity: &age::x25519::Identity, what: &str) -> Result<Vec<u8>> {
    let decryptor = age::Decryptor::new(object)
        .map_err(|e| Error::integrity(format!("{what}: not a valid age file: {e}")))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| Error::config(format!("decrypting {what}: {e}")))?;
    let mut plain = Vec::new();
    reader
        .read_to_end(&mut plain)
        .map_err(|e| Error::integrity(format!("decrypting {what}: {e}")))?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::storage::LocalStorage;
    use std::os::unix::fs::PermissionsExt;

    struct Setup {
        _dir: tempfile::TempDir,
        storage: LocalStorage,
        state: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().join("repo"));
        let state = dir.path().join("state");
        Setup {
            _dir: dir,
            storage,
            state,
        }
    }

    #[test]
    fn ids_are_keyed() {
        let a = ChunkIdKey::from_bytes([1; 32]);
        let b = ChunkIdKey::from_bytes([2; 32]);
        assert_eq!(a.id(b"invoice"), a.id(b"invoice"));
        assert_ne!(a.id(b"invoice"), b.id(b"invoice"));
        assert_ne!(
            a.id(b"invoice").0,
            <[u8; 32]>::from(Sha256::digest(b"invoice"))
        );
        // RFC 2104 HMAC-SHA256, as `openssl dgst -sha256 -mac HMAC -macopt hexkey:…` computes it.
        assert_eq!(
            ChunkIdKey::from_bytes([0x0b; 32]).id(b"Hi There").to_hex(),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn ids_round_trip_through_hex_and_keys_never_print() {
        let id = ChunkIdKey::from_bytes([9; 32]).id(b"x");
        assert_eq!(ChunkId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ChunkId::from_hex("zz").is_err());
        assert_eq!(
            format!("{:?}", ChunkIdKey::from_bytes([9; 32])),
            "ChunkIdKey(***)"
        );
    }

    #[tokio::test]
    async fn the_first_run_creates_an_encrypted_key_and_later_runs_reuse_it() {
        let s = setup();
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let key = load_or_create(&s.storage, &s.state, Some(&recipient))
            .await
            .unwrap();
        assert_eq!(
            load_or_create(&s.storage, &s.state, Some(&recipient))
                .await
                .unwrap(),
            key
        );
        let object = s.storage.get_bytes(KEY_OBJECT).await.unwrap();
        assert!(object.starts_with(b"age-encryption.org/v1\n"));
        assert!(s.storage.get_bytes(PLAIN_KEY_OBJECT).await.is_err());
        let local = local_key_path(&s.state, &s.storage);
        let mode = std::fs::metadata(&local).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let decrypted = decrypt(&object, &identity, KEY_OBJECT).unwrap();
        assert_eq!(ChunkIdKey::from_json(&decrypted, "x").unwrap(), key);
    }

    #[tokio::test]
    async fn a_fresh_host_must_recover_the_key_with_the_identity() {
        let s = setup();
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let key = load_or_create(&s.storage, &s.state, Some(&recipient))
            .await
            .unwrap();
        let fresh_state = s.state.with_file_name("fresh-state");
        let err = load_or_create(&s.storage, &fresh_state, Some(&recipient))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("recover"), "{err}");

        let wrong = age::x25519::Identity::generate();
        assert!(recover(&s.storage, &fresh_state, &wrong).await.is_err());
        assert_eq!(
            recover(&s.storage, &fresh_state, &identity).await.unwrap(),
            key
        );
        assert_eq!(
            load_or_create(&s.storage, &fresh_state, Some(&recipient))
                .await
                .unwrap(),
            key
        );
    }

    #[tokio::test]
    async fn a_local_key_that_is_not_the_repositorys_is_refused() {
        let s = setup();
        let recipient = age::x25519::Identity::generate().to_public();
        load_or_create(&s.storage, &s.state, Some(&recipient))
            .await
            .unwrap();
        // Someone replaced the repository's key object.
        let other = encrypt(&ChunkIdKey::generate().unwrap().to_json(), &recipient).unwrap();
        s.storage.put(KEY_OBJECT, other.into()).await.unwrap();
        let err = load_or_create(&s.storage, &s.state, Some(&recipient))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    }

    #[tokio::test]
    async fn without_a_recipient_the_key_is_stored_in_clear() {
        let s = setup();
        let key = load_or_create(&s.storage, &s.state, None).await.unwrap();
        let object = s.storage.get_bytes(PLAIN_KEY_OBJECT).await.unwrap();
        assert_eq!(ChunkIdKey::from_json(&object, "x").unwrap(), key);
        // A fresh host adopts it without any secret.
        let fresh = s.state.with_file_name("fresh");
        assert_eq!(load_or_create(&s.storage, &fresh, None).await.unwrap(), key);
        // Installing another key is refused.
        let err = install(&s.storage, &fresh, &ChunkIdKey::generate().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        install(&s.storage, &fresh, &key).await.unwrap();
    }

    /// A folder where another host creates the key object just before this one tries to.
    #[derive(Debug)]
    struct RacedByAnotherHost {
        inner: LocalStorage,
        other_state: PathBuf,
        recipient: Option<age::x25519::Recipient>,
    }

    #[async_trait::async_trait]
    impl Storage for RacedByAnotherHost {
        fn location(&self) -> String {
            self.inner.location()
        }
        async fn put(&self, key: &str, body: bytes::Bytes) -> Result<()> {
            self.inner.put(key, body).await
        }
        async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<CreateOutcome> {
            if key.starts_with("keys/") && self.inner.list("keys/").await?.is_empty() {
                load_or_create(&self.inner, &self.other_state, self.recipient.as_ref()).await?;
            }
            self.inner.put_if_absent(key, body).await
        }
        async fn put_stream(
            &self,
            key: &str,
            body: coffer_core::storage::BodyStream,
        ) -> Result<u64> {
            self.inner.put_stream(key, body).await
        }
        async fn get(&self, key: &str) -> Result<coffer_core::storage::ObjectReader> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            start: u64,
            len: u64,
        ) -> Result<coffer_core::storage::ObjectReader> {
            self.inner.get_range(key, start, len).await
        }
        async fn head(&self, key: &str) -> Result<coffer_core::storage::ObjectMeta> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<coffer_core::storage::ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn probe(&self) -> Result<coffer_core::storage::Capabilities> {
            self.inner.probe().await
        }
    }

    #[tokio::test]
    async fn a_host_that_loses_the_creation_race_never_keeps_its_own_key() {
        // In clear, the loser adopts the winner's key.
        let s = setup();
        let raced = RacedByAnotherHost {
            inner: s.storage.clone(),
            other_state: s.state.with_file_name("winner"),
            recipient: None,
        };
        let key = load_or_create(&raced, &s.state, None).await.unwrap();
        let winner = load_or_create(&s.storage, &raced.other_state, None)
            .await
            .unwrap();
        assert_eq!(key, winner);

        // Encrypted, the loser cannot read it: it is told to recover, and keeps no key of its own.
        let s = setup();
        let identity = age::x25519::Identity::generate();
        let raced = RacedByAnotherHost {
            inner: s.storage.clone(),
            other_state: s.state.with_file_name("winner"),
            recipient: Some(identity.to_public()),
        };
        let err = load_or_create(&raced, &s.state, Some(&identity.to_public()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(!local_key_path(&s.state, &s.storage).exists());
        let winner = load_or_create(&s.storage, &raced.other_state, None)
            .await
            .unwrap();
        assert_eq!(
            recover(&s.storage, &s.state, &identity).await.unwrap(),
            winner
        );
    }

    #[tokio::test]
    async fn a_repository_that_lost_its_key_object_gets_the_hosts_key_back() {
        let s = setup();
        let recipient = age::x25519::Identity::generate().to_public();
        let key = load_or_create(&s.storage, &s.state, Some(&recipient))
            .await
            .unwrap();
        s.storage.delete(KEY_OBJECT).await.unwrap();
        assert_eq!(
            load_or_create(&s.storage, &s.state, Some(&recipient))
                .await
                .unwrap(),
            key
        );
        assert!(s.storage.get_bytes(KEY_OBJECT).await.is_ok());
        assert_eq!(
            load_or_create(&s.storage, &s.state, Some(&recipient))
                .await
                .unwrap(),
            key
        );
    }
}
