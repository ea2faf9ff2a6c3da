//! The harness: a repository in a temporary folder or in a bucket of one s3s-fs server shared by
//! the whole test binary, and the path of an object's bytes on disk (both keep objects as plain
//! files) so a test can damage one behind the backend's back.

/// Runs each named scenario (an `async fn(Backend)` of the test file) once on a folder
/// repository and once on the shared s3s-fs, as `folder::NAME` and `s3s_fs::NAME`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod folder {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Backend::Folder).await
            })*
        }
        mod s3s_fs {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Backend::S3).await
            })*
        }
    };
}

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use coffer_core::config::{ChecksumMode, S3Config};
use coffer_core::secret::Secret;
use coffer_core::storage::{LocalStorage, S3Storage, Storage};

const ACCESS_KEY: &str = "COFFERFILESTEST";
const SECRET_KEY: &str = "coffer-files-test-secret";

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Folder,
    S3,
}

/// A repository of one test: its storage and where its objects are on disk.
pub struct Repo {
    pub storage: Box<dyn Storage>,
    /// The folder holding the repository's objects as files (`ROOT/KEY`).
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Repo {
    /// A fresh, empty repository on `backend`.
    pub fn new(backend: Backend) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Folder => {
                let root = dir.path().join("repo");
                Repo {
                    storage: Box::new(LocalStorage::new(root.clone())),
                    root,
                    _dir: dir,
                }
            }
            Backend::S3 => {
                let server = s3s();
                let bucket = server.new_bucket();
                let config = S3Config {
                    bucket: bucket.clone(),
                    prefix: "files-test".into(),
                    endpoint: Some(server.endpoint.clone()),
                    region: "us-east-1".into(),
                    path_style: true,
                    checksum_mode: ChecksumMode::WhenRequired,
                    access_key_id: Secret::new(ACCESS_KEY),
                    secret_access_key: Secret::new(SECRET_KEY),
                    part_size: 5 * 1024 * 1024,
                };
                Repo {
                    storage: Box::new(S3Storage::new(config)),
                    root: server.data.join(bucket).join("files-test"),
                    _dir: dir,
                }
            }
        }
    }

    /// The file holding object `key`.
    pub fn file(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// A state folder for this test (the backup host's).
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self._dir.path().join(name)
    }
}

/// Flips one bit of the byte at `at` of a file.
pub fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// The shared s3s-fs server: stopped when the test binary exits (its guardian shell sees our
/// end of the pipe close).
struct S3s {
    endpoint: String,
    data: PathBuf,
    buckets: Mutex<u32>,
    _dir: tempfile::TempDir,
    _child: Child,
    _stdin: ChildStdin,
}

impl S3s {
    fn new_bucket(&self) -> String {
        let mut n = self.buckets.lock().unwrap();
        *n += 1;
        let name = format!("files-{n}");
        std::fs::create_dir_all(self.data.join(&name)).unwrap();
        name
    }
}

static S3S: OnceLock<S3s> = OnceLock::new();

fn s3s() -> &'static S3s {
    S3S.get_or_init(|| {
        let binary = find_program("s3s-fs");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("s3s-fs.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" & pid=$!; read _ignored; kill "$pid" 2>/dev/null; wait "$pid""#)
            .arg("guardian")
            .arg(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&data)
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {port}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3s {
            endpoint: format!("http://127.0.0.1:{port}"),
            data,
            buckets: Mutex::new(0),
            _dir: dir,
            _child: child,
            _stdin: stdin,
        }
    })
}

/// Finds a program on PATH or in ~/.cargo/bin; fails with the install hint if absent.
fn find_program(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: cargo install s3s-fs@0.14.1 --features binary --locked \
                 (scripts/install-deps.sh --s3 does it)"
            )
        })
}

/// Deterministic pseudo-random bytes (xorshift64).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An S3 server for tests of S3 sources: the shared s3s-fs, or the shared moto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// s3s-fs: keeps content types and metadata, but lists no ETags, and stores keys as paths
    /// (so `a//b` and folder markers do not survive).
    S3sFs,
    /// moto: keeps raw keys, ETags, markers, content types and metadata (in memory).
    Moto,
}

/// A fresh bucket on `server`, and the settings to reach `prefix` in it.
pub fn s3_prefix(server: Server, bucket: &str, prefix: &str) -> S3Config {
    let endpoint = match server {
        Server::S3sFs => {
            let s3s = s3s();
            std::fs::create_dir_all(s3s.data.join(bucket)).unwrap();
            s3s.endpoint.clone()
        }
        Server::Moto => {
            let endpoint = moto();
            create_bucket(&endpoint, bucket);
            endpoint
        }
    };
    S3Config {
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        path_style: true,
        checksum_mode: ChecksumMode::WhenRequired,
        access_key_id: Secret::new(ACCESS_KEY),
        secret_access_key: Secret::new(SECRET_KEY),
        // moto answers CompleteMultipartUpload in a way the SDK does not parse (`unknown (HTTP
        // 200)`): its objects stay below one part. s3s-fs takes the multipart uploads.
        part_size: match server {
            Server::S3sFs => 5 * 1024 * 1024,
            Server::Moto => 16 * 1024 * 1024,
        },
    }
}

/// `PUT /bucket` (moto takes it unsigned).
fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating {bucket}: {answer}"
    );
}

struct Moto {
    endpoint: String,
    _dir: tempfile::TempDir,
    _child: Child,
    _stdin: ChildStdin,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The shared moto server (`pip install "moto[server]"`), under the same guardian as s3s-fs.
fn moto() -> String {
    MOTO.get_or_init(|| {
        let binary = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
            .expect("moto_server is not installed: pip install \"moto[server]\"");
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" & pid=$!; read _ignored; kill "$pid" 2>/dev/null; wait "$pid""#)
            .arg("guardian")
            .arg(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen on {port}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            _child: child,
            _stdin: stdin,
        }
    })
    .endpoint
    .clone()
}
