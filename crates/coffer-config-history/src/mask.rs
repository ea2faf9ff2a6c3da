//! Secret values masked, line by line, for diffs and the git mirror.
//!
//! A line is `KEY=value`, `KEY = value`, `key: value`, `export KEY=value` or `"key": "value"`
//! (a key of letters, digits, `_`, `.` and `-`, optionally quoted, then `=` or `:`). When the key
//! matches one of the table's `mask_keys` globs (case-insensitive; by default `*PASSWORD*`,
//! `*SECRET*`, `*KEY*`, `*TOKEN*`) its value becomes [`MASK`]: inside its quotes when quoted
//! (what follows the closing quote is kept), else the whole rest of the line (a trailing comment
//! too, since it cannot be told from the value). Every other line is kept byte for byte, so a
//! masked file still shows which lines changed.

use coffer_core::error::{Error, Result};

/// What a secret value is replaced with.
pub const MASK: &str = "********";

/// What a secret value is replaced with in a diff when the key's value differs from the older
/// side's, so a changed secret shows as a changed line without showing either value.
pub const MASK_CHANGED: &str = "******** (changed)";

/// Decides which keys hold secrets and masks their values.
#[derive(Debug, Clone)]
pub struct Masker {
    set: globset::GlobSet,
}

impl Masker {
    /// A masker for these glob patterns, matched against keys without regard to case.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut set = globset::GlobSetBuilder::new();
        for pattern in patterns {
            let glob = globset::GlobBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| Error::config(format!("bad mask_keys glob {pattern:?}: {e}")))?;
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| Error::config(format!("bad mask_keys: {e}")))?;
        Ok(Self { set })
    }

    /// A masker for the default keys ([`coffer_core::config::DEFAULT_MASK_KEYS`]).
    pub fn default_keys() -> Self {
        let patterns: Vec<String> = coffer_core::config::DEFAULT_MASK_KEYS
            .iter()
            .map(|p| p.to_string())
            .collect();
        Self::new(&patterns).expect("the default mask keys are valid globs")
    }

    /// Whether values of `key` are masked.
    pub fn is_secret(&self, key: &str) -> bool {
        self.set.is_match(key)
    }

    /// `content` with every secret value masked; lines (and their `\n` or `\r\n`) are kept.
    pub fn mask(&self, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(content.len());
        for (body, end) in lines(content).map(split_end) {
            out.extend_from_slice(&self.mask_line(body));
            out.extend_from_slice(end);
        }
        out
    }

    /// Both sides of a diff masked; on the newer side, a secret whose key held another value
    /// on the older side gets [`MASK_CHANGED`].
    pub fn mask_pair(&self, old: &[u8], new: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut before = std::collections::HashMap::new();
        for (line, _) in lines(old).map(split_end) {
            if let Some((at, key)) = split_assignment(line).filter(|(_, k)| self.is_secret(k)) {
                before.insert(key.to_string(), line[at..].to_vec());
            }
        }
        let mut masked_new = Vec::with_capacity(new.len());
        for (line, end) in lines(new).map(split_end) {
            let changed = split_assignment(line)
                .filter(|(_, k)| self.is_secret(k))
                .is_some_and(|(at, key)| {
                    before
                        .get(key)
                        .is_some_and(|old| old.as_slice() != &line[at..])
                });
            let mask = if changed { MASK_CHANGED } else { MASK };
            masked_new.extend_from_slice(&self.mask_line_with(line, mask));
            masked_new.extend_from_slice(end);
        }
        (self.mask(old), masked_new)
    }

    /// One line (without its end) with a secret value masked.
    pub fn mask_line(&self, line: &[u8]) -> Vec<u8> {
        self.mask_line_with(line, MASK)
    }

    fn mask_line_with(&self, line: &[u8], mask: &str) -> Vec<u8> {
        match split_assignment(line) {
            Some((value_start, key)) if self.is_secret(key) => {
                let mut out = line[..value_start].to_vec();
                let value = &line[value_start..];
                match value.first() {
                    Some(&quote @ (b'"' | b'\'')) => {
                        out.push(quote);
                        out.extend_from_slice(mask.as_bytes());
                        if let Some(close) = closing_quote(&value[1..], quote) {
                            out.extend_from_slice(&value[1 + close..]);
                        } else {
                            out.push(quote);
                        }
                    }
                    _ => out.extend_from_slice(mask.as_bytes()),
                }
                out
            }
            _ => line.to_vec(),
        }
    }
}

/// The lines of `content`, each with its end.
fn lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    content.split_inclusive(|b| *b == b'\n')
}

/// A line split from its end (`\r\n`, `\n` or nothing).
fn split_end(line: &[u8]) -> (&[u8], &[u8]) {
    if let Some(body) = line.strip_suffix(b"\r\n") {
        (body, b"\r\n")
    } else if let Some(body) = line.strip_suffix(b"\n") {
        (body, b"\n")
    } else {
        (line, b"")
    }
}

/// Where the value of an assignment starts and its key; `None` when the line is not one or
/// its value is empty.
fn split_assignment(line: &[u8]) -> Option<(usize, &str)> {
    let blank = |b: u8| b == b' ' || b == b'\t';
    let mut i = 0;
    let skip = |i: &mut usize| {
        while *i < line.len() && blank(line[*i]) {
            *i += 1;
        }
    };
    skip(&mut i);
    if line[i..].starts_with(b"export") && line.get(i + 6).copied().is_some_and(blank) {
        i += 6;
        skip(&mut i);
    }
    let quote = match line.get(i) {
        Some(&q @ (b'"' | b'\'')) => {
            i += 1;
            Some(q)
        }
        _ => None,
    };
    let key_start = i;
    while i < line.len() && (line[i].is_ascii_alphanumeric() || b"_.-".contains(&line[i])) {
        i += 1;
    }
    if i == key_start {
        return None;
    }
    let key = std::str::from_utf8(&line[key_start..i]).ok()?;
    if let Some(q) = quote {
        if line.get(i) != Some(&q) {
            return None;
        }
        i += 1;
    }
    skip(&mut i);
    match line.get(i) {
        Some(b'=' | b':') => i += 1,
        _ => return None,
    }
    skip(&mut i);
    let value_end = line.len() - line.iter().rev().take_while(|b| blank(**b)).count();
    if i >= value_end {
        return None;
    }
    Some((i, key))
}

/// The offset of the quote closing a value (`"` honours backslash escapes).
fn closing_quote(rest: &[u8], quote: u8) -> Option<usize> {
    let mut escaped = false;
    for (at, &b) in rest.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' && quote == b'"' {
            escaped = true;
        } else if b == quote {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masked(line: &str) -> String {
        String::from_utf8(Masker::default_keys().mask(line.as_bytes())).unwrap()
    }

    #[test]
    fn every_assignment_style_is_masked() {
        for (line, expected) in [
            ("DB_PASSWORD=hunter2", "DB_PASSWORD=********"),
            ("DB_PASSWORD = hunter2", "DB_PASSWORD = ********"),
            ("db_password: hunter2", "db_password: ********"),
            ("export API_TOKEN=abc", "export API_TOKEN=********"),
            (
                "  export\tAPI_TOKEN = abc  ",
                "  export\tAPI_TOKEN = ********",
            ),
            ("SECRET=\"a b\\\" c\" # note", "SECRET=\"********\" # note"),
            ("aws_key='xyz'", "aws_key='********'"),
            ("\"password\": \"x\",", "\"password\": \"********\","),
            ("APP_KEY=base64:abc=", "APP_KEY=********"),
            ("PASSWORD=\"unterminated", "PASSWORD=\"********\""),
        ] {
            assert_eq!(masked(line), expected, "{line}");
        }
    }

    #[test]
    fn other_lines_are_kept_as_they_are() {
        for line in [
            "DB_HOST=db.internal",
            "# DB_PASSWORD is set in the vault",
            "PASSWORD=",
            "worker_processes 4;",
            "[mysqld]",
            "",
            "password",
        ] {
            assert_eq!(masked(line), line);
        }
    }

    #[test]
    fn line_ends_and_other_lines_survive() {
        let text = "A=1\r\nDB_PASSWORD=hunter2\r\nB=2\nno newline at the end";
        assert_eq!(
            masked(text),
            "A=1\r\nDB_PASSWORD=********\r\nB=2\nno newline at the end"
        );
    }

    #[test]
    fn mask_keys_are_configurable_and_case_insensitive() {
        let masker = Masker::new(&["dsn".to_string(), "*_pass".to_string()]).unwrap();
        assert_eq!(masker.mask(b"DSN=mysql://u:p@h/db"), b"DSN=********");
        assert_eq!(masker.mask(b"smtp_PASS=x"), b"smtp_PASS=********");
        assert_eq!(masker.mask(b"DB_PASSWORD=kept"), b"DB_PASSWORD=kept");
    }

    #[test]
    fn a_changed_secret_shows_as_changed_without_either_value() {
        let masker = Masker::default_keys();
        let (old, new) = masker.mask_pair(
            b"DB_PASSWORD=hunter2\nAPI_TOKEN=same\n",
            b"DB_PASSWORD=hunter3\nAPI_TOKEN=same\nNEW_SECRET=x\n",
        );
        assert_eq!(old, b"DB_PASSWORD=********\nAPI_TOKEN=********\n");
        assert_eq!(
            String::from_utf8(new).unwrap(),
            "DB_PASSWORD=******** (changed)\nAPI_TOKEN=********\nNEW_SECRET=********\n"
        );
    }

    proptest! {
        /// Whatever the value and spacing, a secret value never survives masking.
        #[test]
        fn a_secret_value_never_survives(
            prefix in "(export )?",
            key in "(DB_|APP_|)(PASSWORD|SECRET|TOKEN|KEY|api_key)(_[A-Z]{0,4})?",
            sep in "[ ]?[=:][ ]?",
            quote in "[\"']?",
            value in "[0-9]{6,20}",
        ) {
            let line = format!("{prefix}{key}{sep}{quote}{value}{quote}");
            let out = masked(&line);
            prop_assert!(!out.contains(&value), "{line} -> {out}");
            prop_assert!(out.contains(MASK));
        }
    }
}
