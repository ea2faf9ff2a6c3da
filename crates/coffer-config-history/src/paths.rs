//! The files a table names: absolute paths and globs expanded, walking only the folders that
//! can match.
//!
//! A pattern's *root* is its literal prefix: the components before the first one holding a glob
//! character (`*`, `?`, `[`, `{`, `\`). `/etc/nginx/**/*.conf` walks `/etc/nginx` (every depth),
//! `/etc/php/*/fpm/php.ini` walks `/etc/php` three levels deep, and `/srv/app/.env` is looked at
//! directly. A pattern whose root would be `/` itself is refused: it would walk the whole
//! filesystem. Folders are never entered through a symlink; a symlink that matches is read as
//! the file it points to.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use coffer_core::config::ConfigBackup;
use coffer_core::error::{Error, Result};

/// Where a pattern's files can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A literal path: this file, if it exists.
    File(PathBuf),
    /// Files below `dir` whose path matches; `depth` is how many components below `dir` a match
    /// can lie at most (`None`: any, the pattern holds `**`).
    Walk {
        /// The literal prefix, a folder.
        dir: PathBuf,
        /// The deepest level a match can lie at below `dir`.
        depth: Option<usize>,
    },
}

fn is_literal(component: &str) -> bool {
    !component.contains(['*', '?', '[', '{', '\\'])
}

/// The root of one absolute pattern; an error for a relative one, one holding `..` or one that
/// would walk `/`.
pub fn root(pattern: &str) -> Result<Root> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(Error::config(format!(
            "config_backup path {pattern:?} is not absolute"
        )));
    };
    let components: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|c| *c == ".." || *c == ".") {
        return Err(Error::config(format!(
            "config_backup path {pattern:?} holds a `.` or `..` component"
        )));
    }
    let literal = components.iter().take_while(|c| is_literal(c)).count();
    let mut dir = PathBuf::from("/");
    for component in &components[..literal] {
        dir.push(component);
    }
    if literal == components.len() {
        if components.is_empty() {
            return Err(Error::config(
                "config_backup path \"/\" is a folder, not a file",
            ));
        }
        return Ok(Root::File(dir));
    }
    if literal == 0 {
        return Err(Error::config(format!(
            "config_backup path {pattern:?} would walk the whole filesystem: start it with a literal folder"
        )));
    }
    let below = &components[literal..];
    let depth = if below.iter().any(|c| c.contains("**")) {
        None
    } else {
        Some(below.len())
    };
    Ok(Root::Walk { dir, depth })
}

/// A path that could not be looked at, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unreadable {
    /// The file or folder.
    pub path: String,
    /// Why (an I/O error, not a regular file, a name that is not UTF-8).
    pub error: String,
}

/// Every regular file the table's patterns name, sorted and each once, plus the paths that
/// could not be looked at (reported, not fatal). A literal path that does not exist is simply
/// absent.
pub fn expand(table: &ConfigBackup) -> Result<(Vec<String>, Vec<Unreadable>)> {
    let mut found = BTreeSet::new();
    let mut unreadable = Vec::new();
    for pattern in &table.paths.patterns {
        match root(pattern)? {
            Root::File(path) => match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    found.insert(path_string(&path, &mut unreadable));
                }
                Ok(_) => unreadable.push(Unreadable {
                    path: path.display().to_string(),
                    error: "not a regular file".into(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => unreadable.push(Unreadable {
                    path: path.display().to_string(),
                    error: e.to_string(),
                }),
            },
            Root::Walk { dir, depth } => {
                walk(&dir, depth, table, &mut found, &mut unreadable, true);
            }
        }
    }
    let found = found.into_iter().flatten().collect();
    Ok((found, unreadable))
}

fn path_string(path: &Path, unreadable: &mut Vec<Unreadable>) -> Option<String> {
    match path.to_str() {
        Some(s) => Some(s.to_string()),
        None => {
            unreadable.push(Unreadable {
                path: path.display().to_string(),
                error: "the path is not UTF-8".into(),
            });
            None
        }
    }
}

fn walk(
    dir: &Path,
    depth: Option<usize>,
    table: &ConfigBackup,
    found: &mut BTreeSet<Option<String>>,
    unreadable: &mut Vec<Unreadable>,
    top: bool,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A glob whose folder is missing matches nothing.
        Err(e) if top && e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            unreadable.push(Unreadable {
                path: dir.display().to_string(),
                error: e.to_string(),
            });
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                unreadable.push(Unreadable {
                    path: dir.display().to_string(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if depth.is_none_or(|d| d > 1) {
                walk(&path, depth.map(|d| d - 1), table, found, unreadable, false);
            }
            continue;
        }
        if !table.paths.is_match(&path) {
            continue;
        }
        // A matching symlink counts as the file it points to; one to a folder is not entered.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {
                found.insert(path_string(&path, unreadable));
            }
            Ok(_) => {}
            Err(e) => unreadable.push(Unreadable {
                path: path.display().to_string(),
                error: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_literal_path_is_looked_at_directly() {
        assert_eq!(
            root("/srv/app/.env").unwrap(),
            Root::File("/srv/app/.env".into())
        );
    }

    #[test]
    fn a_double_star_walks_its_literal_prefix_at_every_depth() {
        assert_eq!(
            root("/etc/nginx/**/*.conf").unwrap(),
            Root::Walk {
                dir: "/etc/nginx".into(),
                depth: None
            }
        );
    }

    #[test]
    fn single_stars_bound_the_depth() {
        assert_eq!(
            root("/etc/php/*/fpm/php.ini").unwrap(),
            Root::Walk {
                dir: "/etc/php".into(),
                depth: Some(3)
            }
        );
        assert_eq!(
            root("/etc/app/{a,b}.conf").unwrap(),
            Root::Walk {
                dir: "/etc/app".into(),
                depth: Some(1)
            }
        );
    }

    #[test]
    fn the_whole_filesystem_is_never_walked() {
        for pattern in ["/**/*.conf", "/*", "/e*c/passwd", "/"] {
            assert!(root(pattern).is_err(), "{pattern}");
        }
        assert!(root("etc/x").is_err(), "relative");
        assert!(root("/etc/../x").is_err(), "dot-dot");
    }

    proptest! {
        /// The root is always a literal prefix of the pattern's folders, never `/`, and every
        /// path the pattern can match lies below it.
        #[test]
        fn the_root_is_a_literal_prefix(
            literal in proptest::collection::vec("[a-z0-9._-]{1,8}", 1..4),
            globbed in proptest::collection::vec("[a-z*?]{1,6}|\\*\\*", 0..4),
        ) {
            prop_assume!(literal.iter().all(|c| c != "." && c != ".."));
            let mut pattern = format!("/{}", literal.join("/"));
            for g in &globbed {
                pattern.push('/');
                pattern.push_str(g);
            }
            match root(&pattern).unwrap() {
                Root::File(path) => {
                    prop_assert_eq!(path.to_str().unwrap(), pattern.as_str());
                }
                Root::Walk { dir, depth } => {
                    prop_assert!(dir != Path::new("/"));
                    prop_assert!(pattern.starts_with(dir.to_str().unwrap()));
                    let has_glob = globbed.iter().any(|c| c.contains(['*', '?']));
                    prop_assert!(has_glob);
                    if globbed.iter().any(|c| c.contains("**")) {
                        prop_assert_eq!(depth, None);
                    } else {
                        prop_assert!(depth.unwrap() >= 1);
                    }
                }
            }
        }
    }
}
