//! `[[files]]` (file snapshots of a folder or an S3 prefix) and `[[config_backup]]`
//! (configuration files versioned whenever their content changes).

use super::repository::{S3Keys, s3_bucket, s3_config, s3_credential};
use super::*;

/// A list of glob patterns, checked and compiled at load.
///
/// `*` and `?` never match `/`; `**` matches any number of path components
/// (`documents/**/*.pdf`), `{a,b}` either alternative and `[...]` a character class.
#[derive(Debug, Clone, Default)]
pub struct GlobList {
    /// The patterns as written.
    pub patterns: Vec<String>,
    set: globset::GlobSet,
}

impl GlobList {
    /// Whether any pattern matches `path`.
    pub fn is_match(&self, path: impl AsRef<Path>) -> bool {
        self.set.is_match(path)
    }

    /// Whether the list has no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Compiles `patterns`; the error is the first bad pattern and why.
    fn build(patterns: Vec<String>, case_insensitive: bool) -> std::result::Result<Self, String> {
        let mut set = globset::GlobSetBuilder::new();
        for pattern in &patterns {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(case_insensitive)
                .build()
                .map_err(|e| format!("bad glob {pattern:?}: {}", e.kind()))?;
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| format!("bad glob list: {}", e.kind()))?;
        Ok(Self { patterns, set })
    }
}

/// One `[[files]]` source: a folder or an S3 prefix whose files are snapshotted.
#[derive(Debug, Clone)]
pub struct FilesSource {
    /// Its name in snapshots and on the command line (`--source NAME`): `name`, else the last
    /// component of the path or prefix (the bucket for a whole bucket). Unique among the
    /// `[[files]]` sources.
    pub name: String,
    /// Where the files are.
    pub location: FilesLocation,
    /// Only entries whose path (relative to the source's root) matches one of these are backed
    /// up; empty: every entry.
    pub include: GlobList,
    /// Entries whose relative path matches one of these are left out, even if included.
    pub exclude: GlobList,
    /// Whether an entry that cannot be read (vanished, changed while read, no permission) fails
    /// the snapshot; `false` (the default): it is reported and the snapshot goes on.
    pub fail_on_unreadable: bool,
}

impl FilesSource {
    /// Whether the entry at `relative` (a path under the source's root) is backed up.
    pub fn selects(&self, relative: impl AsRef<Path>) -> bool {
        let relative = relative.as_ref();
        (self.include.is_empty() || self.include.is_match(relative))
            && !self.exclude.is_match(relative)
    }
}

/// Where a `[[files]]` source's files are.
#[derive(Debug, Clone)]
pub enum FilesLocation {
    /// A local (or mounted) folder, an absolute path.
    Folder(PathBuf),
    /// A bucket and prefix on an S3-compatible server, with its own endpoint and credentials.
    S3(S3Config),
}

impl std::fmt::Display for FilesLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(path) => write!(f, "{}", path.display()),
            Self::S3(s3) if s3.prefix.is_empty() => f.write_str(&s3.url()),
            // A prefix of files is a folder: shown as one.
            Self::S3(s3) => write!(f, "{}/", s3.url()),
        }
    }
}

/// One `[[config_backup]]` table: configuration files versioned whenever their content changes.
#[derive(Debug, Clone)]
pub struct ConfigBackup {
    /// Its name (`name`, default `"config"`), unique among the `[[config_backup]]` tables.
    pub name: String,
    /// The files: absolute paths and globs (`/srv/app/.env`, `/etc/nginx/**/*.conf`).
    pub paths: GlobList,
    /// How often the files' contents are hashed to catch a change the watcher missed
    /// (`poll_interval`, default 5 minutes).
    pub poll_interval: std::time::Duration,
    /// Keys whose values are masked in diffs and in the git mirror, matched without regard to
    /// case (`mask_keys`, default [`DEFAULT_MASK_KEYS`]).
    pub mask_keys: GlobList,
    /// A local git repository every new version is also committed to, secret values masked.
    pub git_mirror: Option<PathBuf>,
}

/// The keys whose values are masked when `mask_keys` is not set.
pub const DEFAULT_MASK_KEYS: [&str; 4] = ["*PASSWORD*", "*SECRET*", "*KEY*", "*TOKEN*"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFiles {
    name: Option<String>,
    path: Option<PathBuf>,
    url: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    checksum_mode: Option<ChecksumMode>,
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    fail_on_unreadable: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfigBackup {
    name: Option<String>,
    paths: Option<Vec<String>>,
    poll_interval: Option<String>,
    mask_keys: Option<Vec<String>>,
    git_mirror: Option<PathBuf>,
}

/// Checks a source's name: it becomes part of object keys and of the command line, so one plain
/// path component of letters, digits, `.`, `_` and `-`, not starting with `-`.
fn check_name(name: &str) -> std::result::Result<(), String> {
    crate::names::check_binlog_file(name).map_err(|_| {
        format!(
            "{name:?} is not a valid source name (1 to 255 ASCII letters, digits, `.`, `_` or `-`, not starting with `-`, not `.` or `..`)"
        )
    })
}

/// Resolves every `[[files]]` table; names are checked and unique.
pub(super) fn resolve_files(
    ld: &Loader<'_>,
    raw: Option<Vec<RawFiles>>,
) -> Result<Vec<FilesSource>> {
    let mut sources: Vec<FilesSource> = Vec::new();
    for (i, raw) in raw.unwrap_or_default().into_iter().enumerate() {
        let section = format!("files[{i}]");
        let key = |name: &str| format!("{section}.{name}");
        let (location, default_name) = match (raw.path, raw.url) {
            (Some(_), Some(_)) => {
                return Err(ld.fail(&key("url"), &"set `path` or `url`, not both"));
            }
            (None, None) => {
                return Err(ld.fail(
                    &key("path"),
                    &"missing: give `path` (an absolute folder) or `url` (s3://BUCKET/PREFIX/)",
                ));
            }
            (Some(path), None) => {
                if !path.is_absolute() {
                    return Err(ld.fail(
                        &key("path"),
                        &format!("{} is not an absolute path", path.display()),
                    ));
                }
                if path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(ld.fail(
                        &key("path"),
                        &format!("{} holds a `..` component", path.display()),
                    ));
                }
                for (name, set) in [
                    ("endpoint", raw.endpoint.is_some()),
                    ("region", raw.region.is_some()),
                    ("path_style", raw.path_style.is_some()),
                    ("checksum_mode", raw.checksum_mode.is_some()),
                    ("access_key_id_file", raw.access_key_id_file.is_some()),
                    (
                        "secret_access_key_file",
                        raw.secret_access_key_file.is_some(),
                    ),
                ] {
                    if set {
                        return Err(
                            ld.fail(&key(name), &"only applies to a `url = \"s3://…\"` source")
                        );
                    }
                }
                let default_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                (FilesLocation::Folder(path), default_name)
            }
            (None, Some(url)) => {
                let Some(rest) = url.strip_prefix("s3://") else {
                    return Err(ld.fail(
                        &key("url"),
                        &format!("{url:?} is not an s3://BUCKET/PREFIX/ URL (a folder is `path`)"),
                    ));
                };
                let bucket = s3_bucket(ld, &section, &url, rest)?;
                let missing = "an S3 files source needs its own credentials";
                let access_key_id = s3_credential(
                    ld,
                    &key("access_key_id_file"),
                    &raw.access_key_id_file,
                    missing,
                )?;
                let secret_access_key = s3_credential(
                    ld,
                    &key("secret_access_key_file"),
                    &raw.secret_access_key_file,
                    missing,
                )?;
                let s3 = s3_config(
                    ld,
                    &section,
                    bucket,
                    S3Keys {
                        endpoint: raw.endpoint,
                        region: raw.region,
                        path_style: raw.path_style,
                        checksum_mode: raw.checksum_mode,
                    },
                    [access_key_id, secret_access_key],
                    16 * 1024 * 1024,
                )?;
                let default_name = s3
                    .prefix
                    .rsplit('/')
                    .next()
                    .filter(|last| !last.is_empty())
                    .unwrap_or(&s3.bucket)
                    .to_string();
                (FilesLocation::S3(s3), Some(default_name))
            }
        };
        let name = match raw.name {
            Some(name) => {
                check_name(&name).map_err(|why| ld.fail(&key("name"), &why))?;
                name
            }
            None => match default_name {
                Some(name) if check_name(&name).is_ok() => name,
                other => {
                    return Err(ld.fail(
                        &key("name"),
                        &format!(
                            "missing: {location} gives no usable default name{}; set `name`",
                            other.map(|n| format!(" ({n:?})")).unwrap_or_default()
                        ),
                    ));
                }
            },
        };
        if let Some(j) = sources.iter().position(|s| s.name == name) {
            return Err(ld.fail(
                &key("name"),
                &format!(
                    "{name:?} is already the name of files[{j}] ({}): give one of them another `name`",
                    sources[j].location
                ),
            ));
        }
        let globs = |list: &str, patterns: Option<Vec<String>>| {
            GlobList::build(patterns.unwrap_or_default(), false)
                .map_err(|why| ld.fail(&key(list), &format!("source {name:?}: {why}")))
        };
        let include = globs("include", raw.include)?;
        let exclude = globs("exclude", raw.exclude)?;
        sources.push(FilesSource {
            location,
            include,
            exclude,
            fail_on_unreadable: raw.fail_on_unreadable.unwrap_or(false),
            name,
        });
    }
    Ok(sources)
}

/// Resolves every `[[config_backup]]` table.
pub(super) fn resolve_config_backups(
    ld: &Loader<'_>,
    raw: Option<Vec<RawConfigBackup>>,
) -> Result<Vec<ConfigBackup>> {
    let mut tables: Vec<ConfigBackup> = Vec::new();
    for (i, raw) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = |name: &str| format!("config_backup[{i}].{name}");
        let name = raw.name.unwrap_or_else(|| "config".to_string());
        check_name(&name).map_err(|why| ld.fail(&key("name"), &why))?;
        if tables.iter().any(|t| t.name == name) {
            return Err(ld.fail(
                &key("name"),
                &format!(
                    "{name:?} is already the name of another [[config_backup]] table (the default is \"config\"): give each a `name`"
                ),
            ));
        }
        let paths = raw.paths.unwrap_or_default();
        if paths.is_empty() {
            return Err(ld.fail(
                &key("paths"),
                &"missing: list the files to version, as absolute paths or globs",
            ));
        }
        if let Some(relative) = paths.iter().find(|p| !p.starts_with('/')) {
            return Err(ld.fail(
                &key("paths"),
                &format!("{relative:?} is not an absolute path or glob"),
            ));
        }
        if let Some(parent) = paths
            .iter()
            .find(|p| p.split('/').any(|component| component == ".."))
        {
            return Err(ld.fail(&key("paths"), &format!("{parent:?} holds a `..` component")));
        }
        let paths = GlobList::build(paths, false).map_err(|why| ld.fail(&key("paths"), &why))?;
        let poll_interval = match raw.poll_interval {
            Some(text) => {
                parse_interval(&text).map_err(|why| ld.fail(&key("poll_interval"), &why))?
            }
            None => std::time::Duration::from_secs(300),
        };
        let mask_keys = raw
            .mask_keys
            .unwrap_or_else(|| DEFAULT_MASK_KEYS.map(String::from).to_vec());
        let mask_keys =
            GlobList::build(mask_keys, true).map_err(|why| ld.fail(&key("mask_keys"), &why))?;
        tables.push(ConfigBackup {
            name,
            paths,
            poll_interval,
            mask_keys,
            git_mirror: raw.git_mirror.map(|p| ld.resolve(&p)),
        });
    }
    Ok(tables)
}

/// Parses an interval as jiff reads a duration: `"5m"`, `"30s"`, `"1h 30m"`, or ISO 8601
/// (`"PT5M"`); at least one second.
fn parse_interval(text: &str) -> std::result::Result<std::time::Duration, String> {
    let duration: jiff::SignedDuration = text.parse().map_err(|e| {
        format!("{text:?} is not a duration like \"5m\", \"30s\" or \"1h 30m\": {e}")
    })?;
    match std::time::Duration::try_from(duration) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(d),
        _ => Err(format!("{text:?} must be at least one second")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config folder holding credential files `ak` and `sk`, and a parser reading from it.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ak"), "AKFILES\n").unwrap();
            std::fs::write(dir.path().join("sk"), "SKFILES\n").unwrap();
            Self(dir)
        }

        fn parse(&self, text: &str) -> Result<Config> {
            let env = |_: &str| None;
            Config::parse(
                &format!("[repository]\nurl = \"repo\"\n{text}"),
                &self.0.path().join("coffer.toml"),
                &env,
            )
        }

        fn error(&self, text: &str) -> String {
            let err = self.parse(text).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{text}");
            let err = err.to_string();
            assert!(!err.contains('\n'), "one line: {err}");
            err
        }
    }

    const S3: &str = "url = \"s3://docs-bucket/tenants/\"\nendpoint = \"http://127.0.0.1:3900\"\naccess_key_id_file = \"ak\"\nsecret_access_key_file = \"sk\"\n";

    #[test]
    fn a_files_only_config_needs_no_database() {
        let dir = Dir::new();
        let config = dir
            .parse(&format!(
                "[[files]]\npath = \"/srv/app/storage/app\"\nexclude = [\"cache/**\"]\n[[files]]\n{S3}"
            ))
            .unwrap();
        assert!(config.source.is_none());
        let err = config.source().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert_eq!(
            err.to_string(),
            format!(
                "this command needs a [source] section in {}",
                dir.0.path().join("coffer.toml").display()
            )
        );

        let [local, s3] = &config.files[..] else {
            panic!("two sources")
        };
        assert_eq!(local.name, "app");
        assert!(
            matches!(&local.location, FilesLocation::Folder(p) if p == Path::new("/srv/app/storage/app"))
        );
        assert!(!local.fail_on_unreadable);
        assert!(local.selects("documents/invoice 1.pdf"));
        assert!(!local.selects("cache/views/x.php"));
        assert_eq!(s3.name, "tenants");
        let FilesLocation::S3(bucket) = &s3.location else {
            panic!("s3")
        };
        assert_eq!(
            (bucket.bucket.as_str(), bucket.prefix.as_str()),
            ("docs-bucket", "tenants")
        );
        assert_eq!(bucket.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(
            (bucket.region.as_str(), bucket.path_style),
            ("us-east-1", true)
        );
        assert_eq!(bucket.access_key_id.expose(), "AKFILES");
        assert_eq!(bucket.secret_access_key.expose(), "SKFILES");
        assert!(!format!("{config:?}").contains("SKFILES"));
        assert_eq!(s3.location.to_string(), "s3://docs-bucket/tenants/");

        let config = dir
            .parse("[[config_backup]]\npaths = [\"/srv/app/.env\"]\n")
            .unwrap();
        assert!(config.source.is_none());
        assert!(config.files.is_empty());
    }

    #[test]
    fn with_a_source_section_the_database_is_still_backed_up() {
        let dir = Dir::new();
        let config = dir
            .parse("[source]\nhost = \"db\"\n[[files]]\npath = \"/srv/app/storage\"\n")
            .unwrap();
        assert_eq!(config.source().unwrap().host, "db");
        // Nothing but a repository: the default source, as before file backups existed.
        let config = dir.parse("").unwrap();
        assert_eq!(config.source().unwrap().host, "127.0.0.1");
        assert!(config.files.is_empty() && config.config_backup.is_empty());
    }

    #[test]
    fn names_default_to_the_last_component_and_must_be_unique() {
        let dir = Dir::new();
        let config = dir
            .parse(&format!(
                "[[files]]\npath = \"/srv/app/storage/app/\"\n[[files]]\nname = \"bucket\"\n{}\n[[files]]\n{}",
                S3.replace("docs-bucket/tenants/", "docs-bucket/a/b"),
                S3.replace("docs-bucket/tenants/", "whole-bucket"),
            ))
            .unwrap();
        let names: Vec<&str> = config.files.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["app", "bucket", "whole-bucket"]);

        let err = dir
            .error("[[files]]\npath = \"/srv/a/storage\"\n[[files]]\npath = \"/srv/b/storage\"\n");
        assert!(
            err.contains(
                "key `files[1].name`: \"storage\" is already the name of files[0] (/srv/a/storage)"
            ),
            "{err}"
        );
        let err = dir.error("[[files]]\nname = \"../up\"\npath = \"/srv/a\"\n");
        assert!(
            err.contains("key `files[0].name`: \"../up\" is not a valid source name"),
            "{err}"
        );
        let err = dir.error("[[files]]\npath = \"/srv/my files\"\n");
        assert!(err.contains("key `files[0].name`: missing"), "{err}");
        let err = dir.error("[[files]]\npath = \"/\"\n");
        assert!(err.contains("key `files[0].name`: missing"), "{err}");
    }

    #[test]
    fn each_source_is_exactly_one_absolute_folder_or_s3_url() {
        let dir = Dir::new();
        for (text, expect) in [
            (
                "[[files]]\npath = \"storage/app\"\n",
                "key `files[0].path`: storage/app is not an absolute path",
            ),
            (
                "[[files]]\npath = \"/srv/../etc\"\n",
                "key `files[0].path`: /srv/../etc holds a `..` component",
            ),
            ("[[files]]\nname = \"x\"\n", "key `files[0].path`: missing"),
            (
                "[[files]]\npath = \"/srv/a\"\nurl = \"s3://b/p\"\n",
                "key `files[0].url`: set `path` or `url`, not both",
            ),
            (
                "[[files]]\nurl = \"gs://bucket/prefix/\"\n",
                "key `files[0].url`: \"gs://bucket/prefix/\" is not an s3://BUCKET/PREFIX/ URL",
            ),
            (
                "[[files]]\nurl = \"/srv/a\"\n",
                "key `files[0].url`: \"/srv/a\" is not an s3://",
            ),
            (
                "[[files]]\nurl = \"s3:///prefix\"\n",
                "key `files[0].url`: \"s3:///prefix\" names no bucket",
            ),
            (
                "[[files]]\npath = \"/srv/a\"\nregion = \"eu\"\n",
                "key `files[0].region`: only applies to a `url = \"s3://…\"` source",
            ),
            (
                "[[files]]\npath = \"/srv/a\"\ncompression = \"zstd\"\n",
                "compression",
            ),
            (
                &format!(
                    "[[files]]\n{}",
                    S3.replace("endpoint = \"http://", "endpoint = \"ftp://")
                ),
                "key `files[0].endpoint`: \"ftp://127.0.0.1:3900\" is not an http:// or https:// URL",
            ),
        ] {
            let err = dir.error(text);
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn an_s3_source_needs_its_own_credential_files() {
        let dir = Dir::new();
        let err = dir.error(&format!(
            "[[files]]\n{}",
            S3.replace("access_key_id_file = \"ak\"\n", "")
        ));
        assert!(
            err.contains("key `files[0].access_key_id_file`: missing: an S3 files source needs its own credentials"),
            "{err}"
        );
        let err = dir.error(&format!(
            "[[files]]\n{}",
            S3.replace(
                "secret_access_key_file = \"sk\"",
                "secret_access_key_file = \"nope\""
            )
        ));
        assert!(
            err.contains("key `files[0].secret_access_key_file`: cannot read secret file"),
            "{err}"
        );
        assert!(err.contains("nope"), "{err}");
        // The repository's credentials in the environment are not a files source's.
        let env = |name: &str| name.starts_with("AWS_").then(|| "REPO".to_string());
        let text = format!(
            "[repository]\nurl = \"repo\"\n[[files]]\n{}",
            S3.replace("access_key_id_file = \"ak\"\n", "")
        );
        assert!(Config::parse(&text, &dir.0.path().join("c.toml"), &env).is_err());
    }

    #[test]
    fn a_bad_glob_names_the_source_and_the_glob() {
        let dir = Dir::new();
        let err = dir.error(
            "[[files]]\nname = \"uploads\"\npath = \"/srv/app/uploads\"\ninclude = [\"**/*.pdf\", \"avatars/[a-\"]\n",
        );
        assert!(
            err.contains("key `files[0].include`: source \"uploads\": bad glob \"avatars/[a-\""),
            "{err}"
        );
        let err = dir.error("[[files]]\npath = \"/srv/app/uploads\"\nexclude = [\"{tmp,cache\"]\n");
        assert!(
            err.contains("key `files[0].exclude`: source \"uploads\": bad glob \"{tmp,cache\""),
            "{err}"
        );
        let config = dir
            .parse("[[files]]\npath = \"/srv/u\"\ninclude = [\"documents/**\", \"*.pdf\"]\nexclude = [\"**/*.tmp\"]\nfail_on_unreadable = true\n")
            .unwrap();
        let source = &config.files[0];
        assert!(source.fail_on_unreadable);
        assert!(source.selects("documents/2026/a.pdf"));
        assert!(source.selects("b.pdf"));
        assert!(!source.selects("avatars/b.pdf"), "`*` does not cross `/`");
        assert!(!source.selects("documents/2026/a.tmp"));
    }

    #[test]
    fn file_snapshots_keep_30_days_and_configuration_12_months_by_default() {
        let dir = Dir::new();
        let config = dir
            .parse("[[files]]\npath = \"/srv/app/storage\"\n")
            .unwrap();
        let within =
            |policy: &crate::retention::Policy| policy.keep_within.map(|span| format!("{span:#}"));
        assert_eq!(
            within(&config.retention.files),
            within(&config.retention.full)
        );
        assert_eq!(within(&config.retention.files).as_deref(), Some("30d"));
        assert_eq!(
            within(&config.retention.config),
            within(&config.retention.drill)
        );
        assert!(config.retention.config.keep_within.unwrap().get_months() == 12);

        let config = dir
            .parse("[retention.files]\nkeep_daily = 7\n[retention.config]\nkeep_last = 50\n")
            .unwrap();
        assert_eq!(config.retention.files.keep_daily, Some(7));
        assert!(
            config.retention.files.keep_within.is_none(),
            "a table replaces the default"
        );
        assert_eq!(config.retention.config.keep_last, Some(50));
        let err = dir.error("[retention.files]\n");
        assert!(
            err.contains("key `retention.files`: the table sets no keep_* rule"),
            "{err}"
        );
        let err = dir.error("[retention.config]\nkeep_within = \"often\"\n");
        assert!(err.contains("key `retention.config.keep_within`"), "{err}");
    }

    #[test]
    fn the_files_and_config_jobs_are_scheduled_and_database_jobs_need_a_source() {
        let dir = Dir::new();
        let both = "[[files]]\npath = \"/srv/app/storage\"\n[[config_backup]]\npaths = [\"/srv/app/.env\"]\n";
        let config = dir
            .parse(&format!("{both}[schedule]\nfiles = \"0 1 * * *\"\nconfig = \"*/5 * * * *\"\nprune = \"0 4 * * *\"\n"))
            .unwrap();
        let jobs: Vec<JobName> = config.schedule.jobs.iter().map(|(j, _)| *j).collect();
        assert_eq!(jobs, [JobName::Prune, JobName::Files, JobName::Config]);
        // No [schedule] and no database: of the runbook's jobs only the prune runs.
        let config = dir.parse(both).unwrap();
        let jobs: Vec<JobName> = config.schedule.jobs.iter().map(|(j, _)| *j).collect();
        assert_eq!(jobs, [JobName::Prune]);
        // With a source, the runbook's schedule as before.
        let config = dir.parse(&format!("[source]\n{both}")).unwrap();
        assert_eq!(config.schedule.jobs.len(), 4);

        for (text, expect) in [
            (
                format!("{both}[schedule]\nfull = \"0 2 * * *\"\n"),
                "key `schedule.full`: this job backs up or restores the database, which needs a [source] section",
            ),
            (
                format!("{both}[schedule]\nfiles = \"0 25 * * *\"\n"),
                "key `schedule.files`: hour field",
            ),
            (
                format!("{both}[schedule]\nconfig = \"continuous\"\n"),
                "key `schedule.config`: only the incremental job",
            ),
            (
                "[schedule]\nfiles = \"0 1 * * *\"\n".to_string(),
                "key `schedule.files`: no [[files]] source to snapshot",
            ),
            (
                "[schedule]\nconfig = \"0 1 * * *\"\n".to_string(),
                "key `schedule.config`: no [[config_backup]] table to version",
            ),
        ] {
            let err = dir.error(&text);
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn config_backup_paths_are_absolute_globs_with_runbook_defaults() {
        let dir = Dir::new();
        let config = dir
            .parse("[[config_backup]]\npaths = [\"/srv/app/.env\", \"/etc/nginx/**/*.conf\", \"/etc/php/*/fpm/php.ini\"]\n")
            .unwrap();
        let [table] = &config.config_backup[..] else {
            panic!("one table")
        };
        assert_eq!(table.name, "config");
        assert_eq!(table.poll_interval, std::time::Duration::from_secs(300));
        assert_eq!(table.mask_keys.patterns, DEFAULT_MASK_KEYS);
        assert!(table.mask_keys.is_match("DB_PASSWORD"));
        assert!(
            table.mask_keys.is_match("aws_secret_access_key"),
            "any case"
        );
        assert!(!table.mask_keys.is_match("APP_NAME"));
        assert!(table.git_mirror.is_none());
        for path in [
            "/srv/app/.env",
            "/etc/nginx/nginx.conf",
            "/etc/nginx/sites-enabled/app.conf",
            "/etc/php/8.3/fpm/php.ini",
        ] {
            assert!(table.paths.is_match(path), "{path}");
        }
        assert!(!table.paths.is_match("/etc/php/8.3/cli/php.ini"));

        let config = dir
            .parse("[[config_backup]]\nname = \"web\"\npaths = [\"/etc/nginx/*.conf\"]\npoll_interval = \"1h 30m\"\nmask_keys = [\"*PASS*\"]\ngit_mirror = \"config.git\"\n[[config_backup]]\npaths = [\"/srv/app/.env\"]\npoll_interval = \"30s\"\n")
            .unwrap();
        let [web, app] = &config.config_backup[..] else {
            panic!("two tables")
        };
        assert_eq!(web.poll_interval, std::time::Duration::from_secs(5400));
        assert_eq!(web.mask_keys.patterns, ["*PASS*"]);
        assert_eq!(
            web.git_mirror.as_deref(),
            Some(&*dir.0.path().join("config.git"))
        );
        assert_eq!(
            (app.name.as_str(), app.poll_interval.as_secs()),
            ("config", 30)
        );

        for (text, expect) in [
            ("paths = []\n", "key `config_backup[0].paths`: missing"),
            ("name = \"x\"\n", "key `config_backup[0].paths`: missing"),
            (
                "paths = [\"/etc/a.conf\", \"srv/app/.env\"]\n",
                "key `config_backup[0].paths`: \"srv/app/.env\" is not an absolute path or glob",
            ),
            (
                "paths = [\"/etc/../root/.env\"]\n",
                "key `config_backup[0].paths`: \"/etc/../root/.env\" holds a `..` component",
            ),
            (
                "paths = [\"/etc/nginx/[*.conf\"]\n",
                "key `config_backup[0].paths`: bad glob \"/etc/nginx/[*.conf\"",
            ),
            (
                "paths = [\"/a\"]\nmask_keys = [\"{A,\"]\n",
                "key `config_backup[0].mask_keys`: bad glob",
            ),
            (
                "paths = [\"/a\"]\npoll_interval = \"often\"\n",
                "key `config_backup[0].poll_interval`: \"often\" is not a duration",
            ),
            (
                "paths = [\"/a\"]\npoll_interval = \"0s\"\n",
                "key `config_backup[0].poll_interval`: \"0s\" must be at least one second",
            ),
            ("paths = [\"/a\"]\npoll_interval = 300\n", "config_backup"),
            ("paths = [\"/a\"]\nwatch = true\n", "watch"),
            (
                "paths = [\"/a\"]\n[[config_backup]]\npaths = [\"/b\"]\n",
                "key `config_backup[1].name`: \"config\" is already the name of another",
            ),
        ] {
            let err = dir.error(&format!("[[config_backup]]\n{text}"));
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
