//! `[repository]`: where and how artifacts are stored (a folder or S3), compression,
//! encryption and the signing keys.

use super::*;

/// The backup repository: where and how artifacts are stored.
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    /// The storage location.
    pub location: RepositoryLocation,
    /// How artifacts are compressed before they are stored.
    pub compression: Compression,
    /// An age public key (`age1…`); when set, every artifact is encrypted to it.
    pub encryption_recipient: Option<String>,
    /// The key every manifest and drill report is signed with (`signing_key_file`); `None`:
    /// they are written unsigned.
    pub signing_key: Option<crate::signing::SigningKey>,
    /// The public key every manifest and drill report read must be signed with (`verify_key`);
    /// `None`: signatures are not checked, and readers warn once per command.
    pub verify_key: Option<crate::signing::VerifyKey>,
}

/// A repository location.
#[derive(Debug, Clone)]
pub enum RepositoryLocation {
    /// A folder on a local (or mounted) file system.
    Local(PathBuf),
    /// A bucket and key prefix on an S3-compatible server.
    S3(S3Config),
}

impl RepositoryConfig {
    /// The age recipient chunks and configuration contents are encrypted to, parsed; `None`
    /// when the repository is not encrypted. (The load checked it, so an error here is a
    /// configuration built by hand.)
    pub fn recipient(&self) -> Result<Option<age::x25519::Recipient>> {
        self.encryption_recipient
            .as_deref()
            .map(|r| {
                r.parse::<age::x25519::Recipient>()
                    .map_err(|e| Error::config(format!("repository.encryption_recipient: {e}")))
            })
            .transpose()
    }
}

impl std::fmt::Display for RepositoryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3(s3) => f.write_str(&s3.url()),
        }
    }
}

/// S3 connection settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint URL for S3-compatible servers (`http://127.0.0.1:3900`); AWS when unset.
    pub endpoint: Option<String>,
    /// Region; must equal the server's.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted servers.
    pub path_style: bool,
    /// When request and response checksums are computed.
    pub checksum_mode: ChecksumMode,
    /// Access key id.
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Multipart part size in bytes; memory use is a small multiple of it.
    pub part_size: usize,
}

impl S3Config {
    /// The location as written in a config: `s3://bucket`, or `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The same server, settings and credentials at the bucket and prefix of `url`
    /// (`s3://bucket/prefix/`): where a restore writes objects (`restore files --to-s3`).
    pub fn at(&self, url: &str) -> Result<S3Config> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::config(format!("{url:?} is not an s3://BUCKET/PREFIX/ URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !valid_bucket {
            return Err(Error::config(format!(
                "{url:?}: {bucket:?} is not a bucket name (lowercase letters, digits, `-`, `.`, `_`)"
            )));
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            ..self.clone()
        })
    }
}

/// When the S3 client computes flexible checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Only where the operation requires one: works with Garage and other servers over plain HTTP.
    WhenRequired,
    /// Whenever the operation supports one (the AWS default; best on AWS itself).
    WhenSupported,
}

/// The compression of stored artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at a level from 1 to 19.
    Zstd(i32),
    /// gzip at a level from 1 to 9, for tools that only read gzip.
    Gzip(u32),
    /// Stored as is.
    None,
}

impl Compression {
    /// The file-name suffix of this compression (`.zst`, `.gz`, or nothing).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Zstd(_) => ".zst",
            Self::Gzip(_) => ".gz",
            Self::None => "",
        }
    }

    /// The name recorded in manifests: `zstd`, `gzip` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd(_) => "zstd",
            Self::Gzip(_) => "gzip",
            Self::None => "none",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    url: Option<String>,
    compression: Option<RawCompression>,
    compression_level: Option<i32>,
    encryption_recipient: Option<String>,
    signing_key_file: Option<PathBuf>,
    verify_key: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    checksum_mode: Option<ChecksumMode>,
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
    part_size_mib: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawCompression {
    Zstd,
    Gzip,
    None,
}

/// Resolves the `[repository]` section against the environment.
pub(super) fn resolve(ld: &Loader<'_>, raw: Option<RawRepository>) -> Result<RepositoryConfig> {
    let repo = raw.unwrap_or_default();
    let url = ld
        .env
        .var("COFFER_REPOSITORY_URL")
        .or(repo.url)
        .ok_or_else(|| {
            ld.fail(
                "repository.url",
                &"missing (a folder path, file://PATH or s3://BUCKET/PREFIX)",
            )
        })?;
    let compression = match (
        repo.compression.unwrap_or(RawCompression::Zstd),
        repo.compression_level,
    ) {
        (RawCompression::Zstd, level) => {
            let level = level.unwrap_or(3);
            if !(1..=19).contains(&level) {
                return Err(ld.fail(
                    "repository.compression_level",
                    &format!("{level} is out of range for zstd (1 to 19)"),
                ));
            }
            Compression::Zstd(level)
        }
        (RawCompression::Gzip, level) => {
            let level = level.unwrap_or(6);
            if !(1..=9).contains(&level) {
                return Err(ld.fail(
                    "repository.compression_level",
                    &format!("{level} is out of range for gzip (1 to 9)"),
                ));
            }
            Compression::Gzip(level as u32)
        }
        (RawCompression::None, Some(_)) => {
            return Err(ld.fail(
                "repository.compression_level",
                &"makes no sense with compression = \"none\"",
            ));
        }
        (RawCompression::None, None) => Compression::None,
    };
    let encryption_recipient = ld
        .env
        .var("COFFER_REPOSITORY_ENCRYPTION_RECIPIENT")
        .or(repo.encryption_recipient);
    if let Some(recipient) = &encryption_recipient {
        recipient.parse::<age::x25519::Recipient>().map_err(|e| {
            ld.fail(
                "repository.encryption_recipient",
                &format!("not an age public key (age1…): {e}"),
            )
        })?;
    }
    // Signing: the secret half is read like any secret; the public half is the key itself
    // (`RW…`) or a path to its file.
    let signing_key = match &repo.signing_key_file {
        Some(file) => {
            let text = ld.read_secret("repository.signing_key_file", file)?;
            Some(
                crate::signing::SigningKey::from_text(text.expose())
                    .map_err(|e| ld.fail("repository.signing_key_file", &e))?,
            )
        }
        None => None,
    };
    let verify_key = match ld
        .env
        .var("COFFER_REPOSITORY_VERIFY_KEY")
        .or(repo.verify_key)
    {
        Some(value) if crate::signing::VerifyKey::looks_like_key(&value) => Some(
            crate::signing::VerifyKey::parse(&value)
                .map_err(|e| ld.fail("repository.verify_key", &e))?,
        ),
        Some(value) => {
            let file = ld.resolve(Path::new(value.trim()));
            Some(
                crate::signing::VerifyKey::from_file(&file)
                    .map_err(|e| ld.fail("repository.verify_key", &e))?,
            )
        }
        None => None,
    };
    if let (Some(signing), Some(verify)) = (&signing_key, &verify_key)
        && signing.verify_key() != *verify
    {
        return Err(ld.fail(
            "repository.verify_key",
            &format!(
                "key {} is not the public half of signing_key_file (key {}): every backup would be refused",
                verify.key_id(),
                signing.key_id()
            ),
        ));
    }
    let location = if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = s3_bucket(ld, "repository", &url, rest)?;
        let credential = |key: &str, var: &str, file: &Option<PathBuf>| match ld.env.var(var) {
            Some(v) => Ok(Secret::new(v)),
            None => s3_credential(
                ld,
                key,
                file,
                &format!("an S3 repository needs credentials (or set {var})"),
            ),
        };
        let access_key_id = credential(
            "repository.access_key_id_file",
            "AWS_ACCESS_KEY_ID",
            &repo.access_key_id_file,
        )?;
        let secret_access_key = credential(
            "repository.secret_access_key_file",
            "AWS_SECRET_ACCESS_KEY",
            &repo.secret_access_key_file,
        )?;
        let part_size_mib = repo.part_size_mib.unwrap_or(16);
        if !(5..=1024).contains(&part_size_mib) {
            return Err(ld.fail(
                "repository.part_size_mib",
                &format!("{part_size_mib} is out of range (5 to 1024)"),
            ));
        }
        RepositoryLocation::S3(s3_config(
            ld,
            "repository",
            bucket,
            S3Keys {
                endpoint: ld.env.var("COFFER_REPOSITORY_ENDPOINT").or(repo.endpoint),
                region: ld.env.var("COFFER_REPOSITORY_REGION").or(repo.region),
                path_style: repo.path_style,
                checksum_mode: repo.checksum_mode,
            },
            [access_key_id, secret_access_key],
            part_size_mib as usize * 1024 * 1024,
        )?)
    } else {
        for (key, set) in [
            ("repository.endpoint", repo.endpoint.is_some()),
            ("repository.region", repo.region.is_some()),
            (
                "repository.access_key_id_file",
                repo.access_key_id_file.is_some(),
            ),
            (
                "repository.secret_access_key_file",
                repo.secret_access_key_file.is_some(),
            ),
        ] {
            if set {
                return Err(ld.fail(key, &"only applies to an s3:// repository"));
            }
        }
        let folder = url.strip_prefix("file://").unwrap_or(&url);
        if folder.is_empty() || url.contains("://") && !url.starts_with("file://") {
            return Err(ld.fail(
                "repository.url",
                &format!("{url:?} is neither a folder, file://PATH nor s3://BUCKET/PREFIX"),
            ));
        }
        RepositoryLocation::Local(ld.resolve(Path::new(folder)))
    };
    Ok(RepositoryConfig {
        location,
        compression,
        encryption_recipient,
        signing_key,
        verify_key,
    })
}

/// The S3 keys a `[repository]` and an S3 `[[files]]` source share, as written (or taken from
/// the environment).
pub(super) struct S3Keys {
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) path_style: Option<bool>,
    pub(super) checksum_mode: Option<ChecksumMode>,
}

/// Reads one S3 credential from the secret file `key` names; `missing` says why it is needed.
pub(super) fn s3_credential(
    ld: &Loader<'_>,
    key: &str,
    file: &Option<PathBuf>,
    missing: &str,
) -> Result<Secret> {
    match file {
        Some(file) => ld.read_secret(key, file),
        None => Err(ld.fail(key, &format!("missing: {missing}"))),
    }
}

/// The bucket and prefix of `url` (`rest` is what follows `s3://`); `section` names the key in
/// messages (`repository`, `files[0]`).
pub(super) fn s3_bucket<'u>(
    ld: &Loader<'_>,
    section: &str,
    url: &str,
    rest: &'u str,
) -> Result<(&'u str, &'u str)> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(ld.fail(
            &format!("{section}.url"),
            &format!("{url:?} names no bucket"),
        ));
    }
    Ok((bucket, prefix))
}

/// The settings of a bucket and prefix, with the defaults every S3 location shares.
pub(super) fn s3_config(
    ld: &Loader<'_>,
    section: &str,
    (bucket, prefix): (&str, &str),
    keys: S3Keys,
    [access_key_id, secret_access_key]: [Secret; 2],
    part_size: usize,
) -> Result<S3Config> {
    if let Some(endpoint) = &keys.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err(ld.fail(
            &format!("{section}.endpoint"),
            &format!("{endpoint:?} is not an http:// or https:// URL"),
        ));
    }
    Ok(S3Config {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        endpoint: keys.endpoint,
        region: keys.region.unwrap_or_else(|| "us-east-1".into()),
        path_style: keys.path_style.unwrap_or(true),
        checksum_mode: keys.checksum_mode.unwrap_or(ChecksumMode::WhenRequired),
        access_key_id,
        secret_access_key,
        part_size,
    })
}
