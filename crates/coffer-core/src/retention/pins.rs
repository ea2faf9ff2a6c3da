//! Pins: backups kept whatever retention says (`coffer backup pin ID --reason …`), one signed
//! object each under `pins/`, so every host that prunes the repository honours them.

use jiff::Timestamp;

use super::plan::Pin;
use crate::error::{Error, Result};
use crate::manifest::is_valid_backup_id;
use crate::repository::Repository;

/// Where pins live in the repository.
pub const PINS_PREFIX: &str = "pins/";

fn key(id: &str) -> String {
    format!("{PINS_PREFIX}{id}.json")
}

/// Pins backup `id` (which must exist) with `reason`, replacing an earlier pin of it.
pub async fn pin(repository: &Repository, id: &str, reason: &str, now: Timestamp) -> Result<Pin> {
    check_reason(reason)?;
    repository.manifest(id).await?;
    pin_record(repository, id, reason, now).await
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::config("--reason must say why the backup is pinned"));
    }
    Ok(())
}

/// Pins record `id` of another kind than a database backup (a file snapshot), whose existence
/// the caller has checked, with `reason`; retention of that kind keeps it. Replaces an earlier
/// pin of it.
pub async fn pin_record(
    repository: &Repository,
    id: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Pin> {
    check_reason(reason)?;
    if !is_valid_backup_id(id) {
        return Err(Error::config(format!("{id:?} is not a backup id")));
    }
    let reason = reason.trim();
    let pin = Pin {
        id: id.to_string(),
        reason: reason.to_string(),
        pinned_at: now,
    };
    let mut body = serde_json::to_vec_pretty(&pin).expect("a pin always serializes");
    body.push(b'\n');
    repository.put_signed(&key(id), body.into()).await?;
    Ok(pin)
}

/// Removes the pin of `id`; an error when it is not pinned.
pub async fn unpin(repository: &Repository, id: &str) -> Result<()> {
    if !is_valid_backup_id(id) {
        return Err(Error::config(format!("{id:?} is not a backup id")));
    }
    if !pins(repository).await?.iter().any(|p| p.id == id) {
        return Err(Error::not_found(format!("{id} is not pinned")));
    }
    repository.storage().delete(&key(id)).await?;
    let _ = repository
        .storage()
        .delete(&crate::signing::signature_key(&key(id)))
        .await;
    Ok(())
}

/// Every pin in the repository. A pin object that does not parse, or names another id than its
/// file, is an integrity error naming it: a prune must never run on a pin list it misread.
pub async fn pins(repository: &Repository) -> Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for object in repository.storage().list(PINS_PREFIX).await? {
        let Some(id) = object
            .key
            .strip_prefix(PINS_PREFIX)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue; // a signature
        };
        let bytes = repository.get_verified(&object.key).await?;
        let pin: Pin = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity(format!("{}: not a pin: {e}", object.key)))?;
        if pin.id != id || !is_valid_backup_id(id) {
            return Err(Error::integrity(format!(
                "{} names backup {:?}, not its own id",
                object.key, pin.id
            )));
        }
        pins.push(pin);
    }
    Ok(pins)
}
