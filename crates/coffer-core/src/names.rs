//! Names that come from outside — the configuration, the command line, the server, and every
//! manifest read back from storage — checked before they become paths, object keys, arguments or
//! SQL, and quoted when they become SQL.
//!
//! Two rules, each in one place:
//! - **SQL identifiers are quoted by [`quote_ident`]**, always: backticks around, backticks inside
//!   doubled. No name is ever spliced into SQL any other way.
//! - **Names are checked by what they become.** A database or table name may hold any character
//!   MariaDB allows in a quoted identifier (quotes, backticks, `;`, `#`, spaces, non-ASCII) except
//!   control characters, which coffer refuses because dumps and logs are read line by line. A
//!   binlog file name becomes a file in a scratch folder, so it must be one plain path component.
//!   An object key from a manifest must stay under that backup's own `data/ID/` folder.
//!
//! [`check_manifest`] applies them to a whole manifest: every reader calls it (through
//! [`crate::manifest::Manifest::from_json`]) so a crafted manifest is an integrity error naming the
//! object before anything is fetched, written or run.

use crate::error::{Error, Result};
use crate::manifest::{Manifest, is_valid_backup_id};

/// MariaDB's limit for database and table names, in characters.
pub const MAX_IDENTIFIER_CHARS: usize = 64;

/// Quotes an SQL identifier: `` inv`oice `` becomes `` `inv``oice` ``. The one way coffer puts a
/// name into SQL.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        if c == '`' {
            out.push('`');
        }
        out.push(c);
    }
    out.push('`');
    out
}

/// Quotes an SQL string literal (single quotes, quote and backslash escaped), for the statements
/// that take a name as a string (`SHOW BINLOG EVENTS IN '…'`).
pub fn quote_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Why a name was refused: a fragment that reads after "`NAME` is not a valid …:".
fn identifier_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.chars().count() > MAX_IDENTIFIER_CHARS {
        return Some("it is longer than 64 characters");
    }
    if name.ends_with(' ') {
        return Some("it ends with a space, which MariaDB does not allow");
    }
    if name.chars().any(|c| c.is_control()) {
        return Some("it holds a control character");
    }
    if name.chars().any(|c| u32::from(c) > 0xFFFF) {
        return Some(
            "it holds a character outside the Basic Multilingual Plane, which MariaDB does not allow",
        );
    }
    None
}

/// Checks a database name (from the configuration, the command line, a dump or a manifest).
pub fn check_database(name: &str) -> std::result::Result<(), String> {
    match identifier_problem(name) {
        Some(why) => Err(format!("{name:?} is not a valid database name: {why}")),
        None => Ok(()),
    }
}

/// Checks a table, view, routine, trigger or event name.
pub fn check_object(name: &str) -> std::result::Result<(), String> {
    match identifier_problem(name) {
        Some(why) => Err(format!("{name:?} is not a valid object name: {why}")),
        None => Ok(()),
    }
}

/// Checks a binary log file name (`mysql-bin.000042`): one plain path component of letters,
/// digits, `.`, `_` and `-`, as servers name them, never `.` or `..`.
pub fn check_binlog_file(name: &str) -> std::result::Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid binlog file name"))
    }
}

/// Checks an artifact's logical name (`dump.sql`, `mysql-bin.000042.index.json`): one plain path
/// component.
pub fn check_artifact_name(name: &str) -> std::result::Result<(), String> {
    check_binlog_file(name).map_err(|_| format!("{name:?} is not a valid artifact name"))
}

/// Checks a whole manifest read from `key`: its id, every object key (each under `data/ID/`),
/// artifact name, binlog file name and database and object name. A finding is an integrity error
/// naming the object: the manifest may have been crafted by someone who can write the storage.
pub fn check_manifest(key: &str, manifest: &Manifest) -> Result<()> {
    let fail = |what: String| Error::integrity(format!("{key}: {what}; refusing to use it"));
    if !is_valid_backup_id(&manifest.id) {
        return Err(fail(format!("{:?} is not a valid backup id", manifest.id)));
    }
    let own_folder = format!("data/{}/", manifest.id);
    for artifact in &manifest.artifacts {
        check_artifact_name(&artifact.name).map_err(&fail)?;
        let rest = artifact.key.strip_prefix(&own_folder);
        if rest.is_none_or(|rest| check_artifact_name(rest).is_err()) {
            return Err(fail(format!(
                "artifact key {:?} is not a file directly under {own_folder}",
                artifact.key
            )));
        }
        let hex = artifact.sha256.len() == 64
            && artifact
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(fail(format!(
                "artifact {:?} has no valid SHA-256",
                artifact.name
            )));
        }
    }
    for name in &manifest.databases {
        check_database(name).map_err(&fail)?;
    }
    for database in &manifest.expectations.databases {
        check_database(&database.name).map_err(&fail)?;
        let objects = database
            .tables
            .iter()
            .map(|t| &t.name)
            .chain(&database.views)
            .chain(&database.routines)
            .chain(&database.triggers)
            .chain(&database.events);
        for name in objects {
            check_object(name).map_err(&fail)?;
        }
    }
    if let Some(coordinates) = &manifest.binlog {
        check_binlog_file(&coordinates.file).map_err(&fail)?;
    }
    if let Some(archived) = &manifest.binlog_file {
        check_binlog_file(&archived.file).map_err(&fail)?;
        if let Some(next) = &archived.next_file {
            check_binlog_file(next).map_err(&fail)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backticks_are_doubled_inside_the_quotes() {
        assert_eq!(quote_ident("app"), "`app`");
        assert_eq!(quote_ident("victim`#"), "`victim``#`");
        assert_eq!(quote_ident("inv`o'ice; x"), "`inv``o'ice; x`");
        assert_eq!(quote_ident("``"), "``````");
    }

    #[test]
    fn string_literals_escape_quotes_and_backslashes() {
        assert_eq!(quote_string("a'b\\c"), "'a''b\\\\c'");
    }

    #[test]
    fn awkward_names_that_mariadb_allows_are_accepted() {
        for name in [
            "inv`o'ice; x",
            "victim`#",
            "a b",
            "Ünïcødé",
            "x.y",
            "a/b",
            "-x",
            "$",
        ] {
            check_database(name).unwrap();
        }
    }

    #[test]
    fn names_mariadb_or_coffer_cannot_hold_are_refused() {
        let long = "x".repeat(65);
        for name in [
            "",
            "trailing ",
            "new\nline",
            "nul\0",
            "emoji😀",
            long.as_str(),
        ] {
            assert!(check_database(name).is_err(), "{name:?} accepted");
        }
        check_database(&"é".repeat(64)).unwrap();
    }

    #[test]
    fn binlog_file_names_are_one_plain_component() {
        check_binlog_file("mysql-bin.000042").unwrap();
        check_binlog_file("host_1-bin.000001").unwrap();
        for bad in [
            "",
            ".",
            "..",
            "../../etc/cron.d/x",
            "/etc/passwd",
            "a/b",
            "-x",
            "a b",
            "a\0",
        ] {
            assert!(check_binlog_file(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn a_quoted_identifier_reads_back_as_the_name(name in "\\PC{0,70}") {
            let quoted = quote_ident(&name);
            let inner = &quoted[1..quoted.len() - 1];
            // Every backtick inside comes in pairs, so the identifier cannot end early.
            prop_assert_eq!(inner.replace("``", ""), name.replace('`', ""));
            prop_assert_eq!(inner.replace("``", "`"), name);
        }

        #[test]
        fn an_accepted_binlog_name_never_leaves_its_folder(name in "[a-z./_-]{0,12}") {
            if check_binlog_file(&name).is_ok() {
                let path = std::path::Path::new("/scratch").join(&name);
                prop_assert_eq!(path.parent(), Some(std::path::Path::new("/scratch")));
            }
        }
    }
}
