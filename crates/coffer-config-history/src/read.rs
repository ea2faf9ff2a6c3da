//! The read side: a path's history, a masked diff of two versions, a version restored.
//!
//! A path's history is every version, of any table in the repository, in which that path was
//! added, modified or deleted. Reading contents back needs the repository's chunk-id key (this
//! host's copy, else recovered from the repository with the age identity) and, for an encrypted
//! repository, the identity itself.

use std::io::Write;
use std::path::Path;

use coffer_core::config::Config;
use coffer_core::error::{Error, ErrorKind, Result};
use coffer_core::repository::Repository;
use coffer_files::chunk_id;
use coffer_files::store::ChunkStore;
use jiff::Timestamp;
use serde::Serialize;

use crate::capture::versions;
use crate::mask::Masker;
use crate::version::{ChangeKind, FileRecord, Version, check_path, check_version_id};

/// One version of one path, as `coffer config history --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The version id.
    pub id: String,
    /// When the version was taken (RFC 3339).
    pub time: Timestamp,
    /// The path.
    pub path: String,
    /// Its size in bytes in this version (0 when deleted).
    pub size: u64,
    /// How it changed: `added`, `modified` or `deleted`.
    pub change: ChangeKind,
    /// Its permission bits in this version (none when deleted).
    pub mode: Option<u32>,
    /// The `[[config_backup]]` table the version belongs to.
    pub name: String,
}

/// The names of every table with versions in the repository.
async fn table_names(repository: &Repository) -> Result<Vec<String>> {
    let mut names: Vec<String> = repository
        .storage()
        .list(crate::version::PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| {
            let rest = o.key.strip_prefix(crate::version::PREFIX)?;
            let (name, _) = rest.split_once('/')?;
            Some(name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    for name in &names {
        coffer_core::names::check_binlog_file(name).map_err(|why| {
            Error::integrity(format!(
                "{}{name}/: not a table name: {why}",
                crate::version::PREFIX
            ))
        })?;
    }
    Ok(names)
}

/// Every version of every table in the repository (configured or not), oldest first, each
/// checked.
pub async fn all_versions(repository: &Repository) -> Result<Vec<Version>> {
    let mut all = Vec::new();
    for name in table_names(repository).await? {
        all.extend(versions(repository, &name).await?);
    }
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(all)
}

fn checked_path(path: &str) -> Result<()> {
    check_path(path).map_err(Error::config)
}

/// The versions in which `path` changed, oldest first.
pub async fn history(repository: &Repository, path: &str) -> Result<Vec<HistoryEntry>> {
    checked_path(path)?;
    Ok(path_history(&all_versions(repository).await?, path))
}

fn path_history(all: &[Version], path: &str) -> Vec<HistoryEntry> {
    // Tables in which `path` was met already: the oldest version of a table that holds the file
    // without naming it as changed is the one a prune left (the file is older), shown as such.
    let mut met: std::collections::BTreeSet<&str> = Default::default();
    all.iter()
        .filter_map(|v| {
            let file = v.file(path);
            let first = (file.is_some() || v.change_of(path).is_some()) && met.insert(&v.name);
            let change = match v.change_of(path) {
                Some(change) => change,
                None if first => ChangeKind::Retained,
                None => return None,
            };
            Some(HistoryEntry {
                id: v.id.clone(),
                time: v.created_at,
                path: path.to_string(),
                size: file.map_or(0, |f| f.size),
                change,
                mode: file.map(|f| f.mode),
                name: v.name.clone(),
            })
        })
        .collect()
}

/// Opens the chunk store for reading versions: this host's chunk-id key, else the repository's
/// recovered with `identity`; blobs decrypted with `identity`. An encrypted version without an
/// identity is a configuration error.
async fn reading_store<'a>(
    config: &Config,
    repository: &'a Repository,
    identity: Option<&age::x25519::Identity>,
    encrypted: bool,
    what: &str,
) -> Result<ChunkStore<'a>> {
    if encrypted && identity.is_none() {
        return Err(Error::config(format!(
            "{what} is encrypted: give the repository's age identity with --identity-file"
        )));
    }
    let storage = repository.storage();
    let state_dir = config.persistent_state_dir()?;
    let recipient = config.repository.recipient()?;
    let local = chunk_id::local_key_path(&state_dir, storage);
    let key = match identity {
        Some(identity) if !local.exists() => {
            chunk_id::recover(storage, &state_dir, identity).await?
        }
        _ => chunk_id::load_or_create(storage, &state_dir, recipient.as_ref()).await?,
    };
    let store = ChunkStore::open(storage, key, recipient).await?;
    Ok(match identity {
        Some(identity) => store.with_identity(identity.clone()),
        None => store,
    })
}

async fn read_content(store: &ChunkStore<'_>, file: &FileRecord, version: &str) -> Result<Vec<u8>> {
    let mut content = Vec::with_capacity(file.size as usize);
    for id in file.chunk_ids()? {
        content.extend_from_slice(&store.read(&id).await?);
    }
    if content.len() as u64 != file.size {
        return Err(Error::integrity(format!(
            "{} in version {version}: {} bytes where the version records {}",
            file.path,
            content.len(),
            file.size
        )));
    }
    Ok(content)
}

fn find<'v>(all: &'v [Version], id: &str) -> Result<&'v Version> {
    check_version_id(id)?;
    all.iter()
        .find(|v| v.id == id)
        .ok_or_else(|| Error::not_found(format!("no configuration version {id}")))
}

/// The masker of table `name`: its `mask_keys` when it is still configured, else the defaults.
fn masker_for(config: &Config, name: &str) -> Result<Masker> {
    match config.config_backup.iter().find(|t| t.name == name) {
        Some(table) => Masker::new(&table.mask_keys.patterns),
        None => Ok(Masker::default_keys()),
    }
}

/// The unified diff of `path` between two versions, secret values masked on both sides.
///
/// `to` defaults to the newest version in which `path` changed, `from` to the one before `to`
/// in the path's history (none: the diff starts from nothing). A version in which the file does
/// not exist counts as empty. Empty output: no difference.
pub async fn diff(
    config: &Config,
    repository: &Repository,
    identity: Option<&age::x25519::Identity>,
    path: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<String> {
    checked_path(path)?;
    let all = all_versions(repository).await?;
    let history = path_history(&all, path);
    if history.is_empty() {
        return Err(Error::not_found(format!(
            "no configuration version holds {path}"
        )));
    }
    let to = match to {
        Some(id) => find(&all, id)?,
        None => find(&all, &history.last().expect("not empty").id)?,
    };
    let from = match from {
        Some(id) => Some(find(&all, id)?),
        None => match history
            .iter()
            .rev()
            .find(|h| (h.time, &h.id) < (to.created_at, &to.id))
        {
            Some(h) => Some(find(&all, &h.id)?),
            None => None,
        },
    };
    let encrypted = to.encrypted || from.is_some_and(|v| v.encrypted);
    let store = reading_store(
        config,
        repository,
        identity,
        encrypted,
        &format!("version {}", to.id),
    )
    .await?;
    let side = async |version: Option<&Version>| -> Result<(String, Vec<u8>)> {
        let Some(version) = version else {
            return Ok(("/dev/null".to_string(), Vec::new()));
        };
        let label = format!("{path}\t{}", version.id);
        let content = match version.file(path) {
            Some(file) => read_content(&store, file, &version.id).await?,
            None => Vec::new(),
        };
        Ok((label, content))
    };
    let (old_label, old) = side(from).await?;
    let (new_label, new) = side(Some(to)).await?;
    let (old, new) = masker_for(config, &to.name)?.mask_pair(&old, &new);
    let old = String::from_utf8_lossy(&old);
    let new = String::from_utf8_lossy(&new);
    let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
    Ok(diff
        .unified_diff()
        .context_radius(3)
        .header(&old_label, &new_label)
        .to_string())
}

/// What [`restore`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The version restored.
    pub version: String,
    /// The file as that version recorded it.
    pub file: FileRecord,
    /// Where it was written.
    pub to: std::path::PathBuf,
}

/// Writes `path` as version `version` recorded it (default: the newest version holding it) to
/// `to`, byte-exact with its recorded mode (and owner, when the process may set it), through a temporary file renamed into place. An
/// existing `to` is refused unless `overwrite`.
pub async fn restore(
    config: &Config,
    repository: &Repository,
    identity: Option<&age::x25519::Identity>,
    path: &str,
    version: Option<&str>,
    to: &Path,
    overwrite: bool,
) -> Result<RestoreReport> {
    checked_path(path)?;
    if let Some(id) = version {
        check_version_id(id)?;
    }
    if !overwrite && std::fs::symlink_metadata(to).is_ok() {
        return Err(Error::refused(format!(
            "{} exists: give --overwrite to replace it",
            to.display()
        )));
    }
    let all = all_versions(repository).await?;
    let chosen = match version {
        Some(id) => find(&all, id)?,
        None => all
            .iter()
            .rev()
            .find(|v| v.file(path).is_some())
            .ok_or_else(|| Error::not_found(format!("no configuration version holds {path}")))?,
    };
    let file = chosen.file(path).ok_or_else(|| {
        Error::not_found(format!("{path} does not exist in version {}", chosen.id))
    })?;
    let store = reading_store(
        config,
        repository,
        identity,
        chosen.encrypted,
        &format!("version {}", chosen.id),
    )
    .await?;
    let content = read_content(&store, file, &chosen.id).await?;
    write_file(to, &content, file, overwrite)?;
    Ok(RestoreReport {
        version: chosen.id.clone(),
        file: file.clone(),
        to: to.to_path_buf(),
    })
}

fn write_file(to: &Path, content: &[u8], file: &FileRecord, overwrite: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, e: std::io::Error| Error::other(format!("{what} {}: {e}", to.display()));
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".coffer-restore-")
        .tempfile_in(parent)
        .map_err(|e| io("creating a temporary file beside", e))?;
    temp.write_all(content).map_err(|e| io("writing", e))?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(file.mode))
        .map_err(|e| io("setting the mode of", e))?;
    // The recorded owner when allowed (root); otherwise the file stays the restorer's.
    match std::os::unix::fs::fchown(temp.as_file(), Some(file.uid), Some(file.gid)) {
        Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
            return Err(io("setting the owner of", e));
        }
        _ => {}
    }
    temp.as_file().sync_all().map_err(|e| io("syncing", e))?;
    if overwrite {
        temp.persist(to).map_err(|e| io("renaming into", e.error))?;
    } else {
        // Checked above already; this closes the race with a file created meanwhile.
        temp.persist_noclobber(to).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::new(
                    ErrorKind::Refused,
                    format!("{} exists: give --overwrite to replace it", to.display()),
                )
            } else {
                io("renaming into", e.error)
            }
        })?;
    }
    Ok(())
}
