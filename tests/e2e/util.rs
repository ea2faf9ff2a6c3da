//! The harness: one source MariaDB, one s3s-fs and (when asked) one Garage per test binary,
//! shared by every test; a builder that runs the real `coffer` binary with a generated config.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use coffer_verifier::{Sandbox, SandboxOptions};

/// The password of the backup account: spaces, quotes and non-ASCII, so quoting bugs show.
pub const SOURCE_PASSWORD: &str = "Tr0ub4dor&3 'pässwörd\" #x";
/// The backup account.
pub const SOURCE_USER: &str = "coffer_backup";

/// The shared source database: `app` (the invoice platform fixture) and `bulk` (bigger rows).
pub struct Source {
    pub sandbox: Sandbox,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts (once) and returns the shared source server.
pub fn source() -> &'static Source {
    SOURCE.get_or_init(|| {
        let sandbox = Sandbox::start(SandboxOptions {
            server_id: 101,
            ..Default::default()
        })
        .expect("source sandbox starts");
        let fixture =
            std::fs::read_to_string(repo_root().join("scripts/sql/invoice-platform.sql")).unwrap();
        sandbox
            .sql(&format!("SET @scale = 200;\n{fixture}"))
            .expect("fixture loads");
        load_bulk(&sandbox, 60000);
        sandbox
            .create_user(SOURCE_USER, SOURCE_PASSWORD, BACKUP_GRANTS)
            .expect("backup account");
        Source { sandbox }
    })
}

/// Compression slow enough (gzip -9, single-threaded) that the dump is still reading rows from
/// the server when a test interrupts it: backpressure reaches the dump tool through the pipe.
/// (zstd's worker thread would buffer a whole job and let a small dump finish early.)
pub const SLOW_COMPRESSION: &str = "compression = \"gzip\"\ncompression_level = 9\n";

/// The grants of the backup account.
pub const BACKUP_GRANTS: &str = "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.*";

/// Creates database `bulk` with `rows` rows of ~520 bytes of poorly compressible text.
pub fn load_bulk(sandbox: &Sandbox, rows: u32) {
    sandbox
        .sql(&format!(
                "CREATE DATABASE bulk; USE bulk;
                 CREATE TABLE blobs (id INT PRIMARY KEY, body MEDIUMTEXT) ENGINE=InnoDB;
                 SET SESSION max_recursive_iterations = 1000000;
                 INSERT INTO blobs WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows})
                   SELECT n, CONCAT(SHA2(n, 512), SHA2(n + 1e6, 512), SHA2(n + 2e6, 512), SHA2(n + 3e6, 512)) FROM s;",
        ))
        .expect("bulk data loads");
}

/// Runs a query on the source as root and returns trimmed output.
pub fn source_sql(sql: &str) -> String {
    source()
        .sandbox
        .sql(sql)
        .expect("query on source")
        .trim()
        .to_string()
}

/// A process that lives as long as the test binary: a guardian shell stops it when our pipe closes.
pub struct Guarded {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Guarded {
    /// Stops the server and waits until it is gone.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// With `remove_dir`, the guardian also removes `dir` (the server's data) when it stops the
/// server: shared servers live in statics, which are never dropped.
pub fn guarded(
    program: &Path,
    args: &[String],
    envs: &[(&str, String)],
    dir: &Path,
    remove_dir: bool,
) -> Guarded {
    let log = dir.join("server.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let cleanup = if remove_dir {
        r#"rm -rf "$GUARDED_DIR""#
    } else {
        "true"
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#""$@" & pid=$!; read _ignored; kill "$pid" 2>/dev/null; wait "$pid"; {cleanup}"#
        ))
        .env("GUARDED_DIR", dir)
        .arg("guardian")
        .arg(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let stdin = child.stdin.take().unwrap();
    Guarded {
        child,
        stdin: Some(stdin),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill SIGNAL pid` (`-STOP`, `-CONT`, `-HUP`, `-TERM` …); the test fails if it cannot be sent.
pub fn signal(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Finds a program on PATH or in ~/.cargo/bin; the test fails with the install hint if absent.
pub fn program(name: &str, hint: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: {hint} (scripts/install-deps.sh does it)")
        })
}

/// An S3-compatible server for tests.
pub struct S3Server {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Where s3s-fs keeps objects as plain files (`DIR/BUCKET/KEY`); None for Garage.
    pub data_dir: Option<PathBuf>,
    pub bucket: Option<String>,
    _dir: tempfile::TempDir,
    process: Option<Guarded>,
}

static S3S: OnceLock<S3Server> = OnceLock::new();
static GARAGE: OnceLock<S3Server> = OnceLock::new();

/// The shared s3s-fs server.
pub fn s3s() -> &'static S3Server {
    S3S.get_or_init(|| start_s3s(true))
}

/// A private s3s-fs server, for a test that stops it ([`S3Server::kill`]); without
/// `remove_on_exit` its data stays for inspection until the server value is dropped.
pub fn start_s3s(remove_on_exit: bool) -> S3Server {
    {
        let binary = program(
            "s3s-fs",
            "cargo install s3s-fs@0.14.1 --features binary --locked",
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let port = free_port();
        let (ak, sk) = (
            "COFFERTESTKEY".to_string(),
            "coffer-test-secret-key".to_string(),
        );
        let log = dir.path().join("server.log");
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            &ak,
            "--secret-key",
            &sk,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([data.display().to_string()])
        .collect::<Vec<_>>();
        let process = guarded(&binary, &args, &[], dir.path(), remove_on_exit);
        wait_for_port(port, "s3s-fs", &log);
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "us-east-1".into(),
            access_key: ak,
            secret_key: sk,
            data_dir: Some(data),
            bucket: None,
            _dir: dir,
            process: Some(process),
        }
    }
}

impl S3Server {
    /// Stops the server now, keeping its data folder.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// A fresh bucket name for one test (created on s3s-fs; Garage has its one default bucket, so
    /// tests there use distinct prefixes instead).
    pub fn new_bucket(&self, name: &str) -> String {
        match (&self.data_dir, &self.bucket) {
            (Some(data), _) => {
                std::fs::create_dir_all(data.join(name)).unwrap();
                name.to_string()
            }
            (None, Some(bucket)) => bucket.clone(),
            (None, None) => unreachable!(),
        }
    }
}

/// The shared single-node Garage server (a real production object store).
pub fn garage() -> &'static S3Server {
    GARAGE.get_or_init(|| {
        let binary = program("garage", "cargo install garage@2.5.0 --locked");
        let dir = tempfile::tempdir().unwrap();
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\n[admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\nadmin_token = \"coffer-test-admin\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
                secret = "c0ffee".repeat(10) + "abcd",
            ),
        )
        .unwrap();
        let access_key = format!("GK{}", "0123456789abcdef01234567");
        let secret_key = "fedcba9876543210".repeat(4);
        let log = dir.path().join("server.log");
        let args = vec!["-c".to_string(), config.display().to_string(), "server".into(), "--single-node".into(), "--default-bucket".into()];
        let envs = [
            ("GARAGE_DEFAULT_ACCESS_KEY", access_key.clone()),
            ("GARAGE_DEFAULT_SECRET_KEY", secret_key.clone()),
            ("GARAGE_DEFAULT_BUCKET", "backups".to_string()),
        ];
        let process = guarded(&binary, &args, &envs, dir.path(), true);
        wait_for_port(s3_port, "garage", &log);
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: "garage".into(),
            access_key,
            secret_key,
            data_dir: None,
            bucket: Some("backups".into()),
            _dir: dir,
            process: Some(process),
        };
        // The default bucket and key appear shortly after the port opens: wait until a listing works.
        let deadline = Instant::now() + Duration::from_secs(30);
        let storage = coffer_core::storage::S3Storage::new(server.s3_config("backups", "probe"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        loop {
            use coffer_core::storage::Storage;
            match runtime.block_on(storage.list("")) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => panic!("garage never became ready: {e}: {}", std::fs::read_to_string(&log).unwrap_or_default()),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        server
    })
}

impl S3Server {
    pub fn s3_config(&self, bucket: &str, prefix: &str) -> coffer_core::config::S3Config {
        coffer_core::config::S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: self.region.clone(),
            path_style: true,
            checksum_mode: coffer_core::config::ChecksumMode::WhenRequired,
            access_key_id: coffer_core::secret::Secret::new(&self.access_key),
            secret_access_key: coffer_core::secret::Secret::new(&self.secret_key),
            part_size: 5 * 1024 * 1024,
        }
    }
}

/// A source server of a test's own (to write to, crash or give its own binlog), with the backup
/// account.
pub fn private_source(options: SandboxOptions) -> Sandbox {
    let source = Sandbox::start(options).unwrap();
    source
        .create_user(SOURCE_USER, SOURCE_PASSWORD, BACKUP_GRANTS)
        .unwrap();
    source
}

/// An empty server to restore into, with an account `restorer` (password `pw`) allowed
/// everything.
pub fn restore_target(options: SandboxOptions) -> Sandbox {
    let target = Sandbox::start(options).unwrap();
    target
        .create_user("restorer", "pw", "ALL PRIVILEGES ON *.*")
        .unwrap();
    target
}

/// The server's `@@gtid_binlog_pos`: its newest transaction, for `--at-gtid`.
pub fn gtid_position(sandbox: &Sandbox) -> String {
    sandbox
        .sql("SELECT @@gtid_binlog_pos")
        .unwrap()
        .trim()
        .to_string()
}

/// Runs `coffer restore db --target TARGET ARGS…` as `restorer`.
pub fn restore_into(setup: &Setup, target: &Sandbox, args: &[&str]) -> Run {
    let target_arg = format!("127.0.0.1:{}", target.port());
    let mut all = vec!["restore", "db", "--target", &target_arg];
    all.extend_from_slice(args);
    Run::from(
        setup
            .coffer(&all)
            .env("COFFER_TARGET_USER", "restorer")
            .env("COFFER_TARGET_PASSWORD", "pw")
            .output()
            .unwrap(),
    )
}

/// A test's own folder with a config file.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

/// Where a test's repository lives.
pub enum Repo<'a> {
    Folder,
    S3 {
        server: &'a S3Server,
        bucket: String,
        prefix: String,
    },
}

impl Setup {
    /// A config pointing at the shared source (`databases`) and the given repository, with
    /// `extra` appended to `[repository]`.
    pub fn new(repo: Repo<'_>, databases: &[&str], extra_repository: &str) -> Setup {
        Self::with_source(&source().sandbox, repo, databases, extra_repository)
    }

    /// Like [`Setup::new`] for another source server, which must have the backup account.
    pub fn with_source(
        source: &Sandbox,
        repo: Repo<'_>,
        databases: &[&str],
        extra_repository: &str,
    ) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        write_secret(&secrets.join("db-password"), SOURCE_PASSWORD);
        let repository = match repo {
            Repo::Folder => "url = \"repo\"\n".to_string(),
            Repo::S3 {
                server,
                bucket,
                prefix,
            } => {
                write_secret(&secrets.join("s3-key-id"), &server.access_key);
                write_secret(&secrets.join("s3-secret"), &server.secret_key);
                format!(
                    "url = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\nregion = \"{}\"\npath_style = true\n\
                     checksum_mode = \"when_required\"\naccess_key_id_file = \"secrets/s3-key-id\"\n\
                     secret_access_key_file = \"secrets/s3-secret\"\npart_size_mib = 5\n",
                    server.endpoint, server.region
                )
            }
        };
        let databases = databases
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "timezone = \"Asia/Riyadh\"\n\n[repository]\n{repository}{extra_repository}\n\n[source]\nhost = \"127.0.0.1\"\nport = {}\n\
             user = \"{SOURCE_USER}\"\npassword_file = \"secrets/db-password\"\ndatabases = [{databases}]\n",
            source.port()
        );
        let config = dir.path().join("coffer.toml");
        std::fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    /// The local repository folder (for `Repo::Folder`).
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// A `coffer --config THIS …` command.
    pub fn coffer(&self, args: &[&str]) -> Command {
        let mut command = coffer_command();
        command.arg("--config").arg(&self.config).args(args);
        command
    }

    /// Runs `coffer … args` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.coffer(args).output().unwrap())
    }

    /// The ids `backup list --json` shows, oldest first: every kind, or only `kind`.
    pub fn listed(&self, kind: Option<&str>) -> Vec<String> {
        self.run(&["backup", "list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| kind.is_none_or(|k| b["kind"] == k))
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Appends text (a new section) to the config.
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push_str(text);
        std::fs::write(&self.config, config).unwrap();
    }

    /// Rewrites the config with `from` replaced by `to`.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "{from} not in config");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }
}

fn write_secret(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::create(path).unwrap();
    writeln!(file, "{value}").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The `coffer` binary under test, with a clean environment for its variables.
pub fn coffer_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    for (key, _) in std::env::vars() {
        if key.starts_with("COFFER_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command.env("COFFER_LOG", "info").stdin(Stdio::null());
    command
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts success and returns stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "coffer failed: {self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Asserts the exit code.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// The `coffer: error: …` line of stderr.
    pub fn error_line(&self) -> String {
        self.stderr
            .lines()
            .find(|l| l.starts_with("coffer: error:"))
            .unwrap_or_else(|| panic!("no error line in {self:#?}"))
            .to_string()
    }
}

/// Every file below `dir`, as paths relative to it.
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out
}
