//! Throwaway MariaDB servers: a data directory in a temp folder, `mariadbd` on a free loopback
//! port, gone when dropped.
//!
//! The recovery drill restores into one of these; the tests and the demo start their source
//! databases the same way, so the code that runs drills is exercised by every test.
//!
//! `mariadbd` runs under a tiny `sh` guardian that holds a pipe from us: when the pipe closes —
//! we dropped the [`Sandbox`], or our process died, even by `SIGKILL` — the guardian stops the
//! server and removes its folder. No sandbox outlives the process that started it, and none
//! leaves its data behind (a static sandbox shared by a test binary is never dropped).

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_core::client::{Endpoint, Tls, TlsMode};
use coffer_core::secret::Secret;

/// Errors of sandbox servers.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A MariaDB server program is not installed.
    #[error("{0} is not installed (install mariadb-server and mariadb-client)")]
    Missing(&'static str),
    /// A step failed; the message says which and includes the server's own words.
    #[error("{0}")]
    Failed(String),
    /// Local I/O failed.
    #[error("sandbox: {0}")]
    Io(#[from] std::io::Error),
}

/// How the binary log records changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinlogFormat {
    /// Row images.
    Row,
    /// Statements where safe, rows otherwise (MariaDB's default).
    Mixed,
    /// Statements.
    Statement,
}

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// `--server-id`.
    pub server_id: u32,
    /// Write a binary log (`--log-bin`).
    pub log_bin: bool,
    /// Its format.
    pub binlog_format: BinlogFormat,
    /// `--gtid-strict-mode`.
    pub gtid_strict_mode: bool,
    /// Further `mariadbd` options.
    pub extra_args: Vec<String>,
    /// Serve TLS over TCP with these files; `None`: no TLS.
    pub tls: Option<SandboxTls>,
}

/// A sandbox's TLS: `--ssl-cert`, `--ssl-key`, `--ssl-ca` (PEM files) and, optionally,
/// `--require-secure-transport=ON`. [`Sandbox::sql`] still works: it uses the Unix socket, which
/// the server counts as secure.
#[derive(Debug, Clone)]
pub struct SandboxTls {
    /// The server's certificate.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// The CA that signed it (and client certificates).
    pub ca_file: PathBuf,
    /// Refuse TCP clients that do not use TLS.
    pub require_secure_transport: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            server_id: 1,
            log_bin: true,
            binlog_format: BinlogFormat::Mixed,
            gtid_strict_mode: false,
            extra_args: Vec::new(),
            tls: None,
        }
    }
}

/// A running throwaway server.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    port: u16,
    options: SandboxOptions,
    guardian: Option<(Child, ChildStdin)>,
}

fn find_program(names: &[&'static str]) -> Result<PathBuf, SandboxError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        PathBuf::from("/usr/sbin"),
        PathBuf::from("/usr/local/sbin"),
        PathBuf::from("/usr/libexec"),
    ];
    for name in names {
        for dir in std::env::split_paths(&path_var).chain(extra.iter().cloned()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(SandboxError::Missing(names[0]))
}

fn free_port() -> Result<u16, SandboxError> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn running_as_root() -> bool {
    // The effective uid is not reachable without unsafe code or a dependency; `id -u` is cheap.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

impl Sandbox {
    /// Initializes a data directory and starts `mariadbd` on a free loopback port; returns once
    /// the server answers.
    pub fn start(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        // In coffer's private scratch space: a sandbox of a run killed with -9 is removed by the
        // next run.
        let dir = coffer_core::scratch::dir("sandbox-")
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let install = find_program(&["mariadb-install-db", "mysql_install_db"])?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        let mut command = Command::new(install);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            // A private tmpdir: concurrent bootstraps sharing /tmp have been seen to collide.
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .stdin(Stdio::null());
        if running_as_root() {
            command.arg("--user=root");
        }
        let output = command.output()?;
        if !output.status.success() {
            return Err(SandboxError::Failed(format!(
                "mariadb-install-db failed ({}): {}",
                output.status,
                last_lines(&String::from_utf8_lossy(&output.stderr), 3)
            )));
        }
        std::fs::create_dir_all(dir.path().join("binlog"))?;
        let mut sandbox = Sandbox {
            dir,
            port: 0,
            options,
            guardian: None,
        };
        sandbox.launch()?;
        Ok(sandbox)
    }

    fn launch(&mut self) -> Result<(), SandboxError> {
        let mariadbd = find_program(&["mariadbd", "mysqld"])?;
        let mut last_error = None;
        // A restart keeps its port when it can (clients reconnecting to the same address is
        // what a restart looks like in production). A free port can be taken between our probe
        // and the server's bind: try a few.
        for attempt in 0..4 {
            if attempt > 0 || self.port == 0 {
                self.port = free_port()?;
            }
            match self.spawn(&mariadbd) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("tried at least once"))
    }

    fn spawn(&mut self, mariadbd: &Path) -> Result<(), SandboxError> {
        let d = self.dir.path();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", d.join("data").display()),
            format!("--socket={}", self.socket().display()),
            format!("--pid-file={}", d.join("mariadbd.pid").display()),
            format!("--log-error={}", self.error_log().display()),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".to_string(),
            format!("--tmpdir={}", d.join("tmp").display()),
            "--skip-name-resolve".to_string(),
            format!("--server-id={}", self.options.server_id),
            "--innodb-buffer-pool-size=128M".to_string(),
            "--innodb-log-file-size=64M".to_string(),
            "--max-allowed-packet=64M".to_string(),
        ];
        if self.options.log_bin {
            args.push(format!(
                "--log-bin={}",
                d.join("binlog/mysql-bin").display()
            ));
            let format = match self.options.binlog_format {
                BinlogFormat::Row => "ROW",
                BinlogFormat::Mixed => "MIXED",
                BinlogFormat::Statement => "STATEMENT",
            };
            args.push(format!("--binlog-format={format}"));
        }
        if self.options.gtid_strict_mode {
            args.push("--gtid-strict-mode=ON".to_string());
        }
        if running_as_root() {
            args.push("--user=root".to_string());
        }
        if let Some(tls) = &self.options.tls {
            args.push(format!("--ssl-cert={}", tls.cert_file.display()));
            args.push(format!("--ssl-key={}", tls.key_file.display()));
            args.push(format!("--ssl-ca={}", tls.ca_file.display()));
            if tls.require_secure_transport {
                args.push("--require-secure-transport=ON".to_string());
            }
        }
        args.extend(self.options.extra_args.iter().cloned());
        let _ = std::fs::remove_file(self.socket());
        let mut child = Command::new("sh")
            .arg("-c")
            // `keep` on the pipe means a restart follows; anything else (our process died, or
            // the sandbox was dropped) also removes the sandbox folder.
            .arg(concat!(
                r#""$@" & pid=$!; read -r order; kill "$pid" 2>/dev/null; wait "$pid"; "#,
                r#"[ "$order" = keep ] || rm -rf "$COFFER_SANDBOX_DIR""#
            ))
            .env("COFFER_SANDBOX_DIR", d)
            .arg("coffer-sandbox")
            .arg(mariadbd)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        self.guardian = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((child, _)) = &mut self.guardian
                && let Some(status) = child.try_wait()?
            {
                self.guardian = None;
                return Err(SandboxError::Failed(format!(
                    "mariadbd exited during start-up ({status}): {}",
                    last_lines(
                        &std::fs::read_to_string(self.error_log()).unwrap_or_default(),
                        3
                    )
                )));
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.sql("SELECT 1").is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(SandboxError::Failed(format!(
                    "mariadbd did not answer within 60 s: {}",
                    last_lines(
                        &std::fs::read_to_string(self.error_log()).unwrap_or_default(),
                        3
                    )
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (cleanly: it gets `SIGTERM` and is waited for). The data stays until drop.
    pub fn stop(&mut self) {
        self.stop_guardian(true);
    }

    fn stop_guardian(&mut self, keep_data: bool) {
        if let Some((mut child, mut stdin)) = self.guardian.take() {
            if keep_data {
                let _ = stdin.write_all(b"keep\n");
            }
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Stops and starts the server again on the same data, on the same port unless it was taken
    /// meanwhile.
    pub fn restart(&mut self) -> Result<(), SandboxError> {
        self.stop();
        self.launch()
    }

    /// Kills the server abruptly (`SIGKILL`), as a crash would; [`Sandbox::restart`] brings it back.
    pub fn crash(&mut self) -> Result<(), SandboxError> {
        let pid = std::fs::read_to_string(self.dir.path().join("data").join("mariadbd.pid"))
            .or_else(|_| std::fs::read_to_string(self.dir.path().join("mariadbd.pid")))?;
        Command::new("kill").arg("-KILL").arg(pid.trim()).status()?;
        self.stop();
        Ok(())
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadbd.sock")
    }

    /// The folder holding data, binlogs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The folder holding the binary logs.
    pub fn binlog_dir(&self) -> PathBuf {
        self.dir.path().join("binlog")
    }

    /// The server's error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("mariadbd.err")
    }

    /// `root` over TCP (no password: the sandbox is reachable only from this machine).
    pub fn root_endpoint(&self) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            password: Secret::default(),
            tls: self.client_tls(),
            stall: coffer_core::client::Stall::target(coffer_core::storage::DEFAULT_STALL_TIMEOUT),
        }
    }

    /// How clients reach it over TCP: with a TLS sandbox, `verify-ca` against its CA; without,
    /// plaintext (loopback only).
    pub fn client_tls(&self) -> Tls {
        match &self.options.tls {
            Some(tls) => Tls {
                mode: TlsMode::VerifyCa,
                ca_file: Some(tls.ca_file.clone()),
                ..Tls::default()
            },
            None => Tls::disabled(),
        }
    }

    /// Runs SQL as root over the socket with the `mariadb` client; returns its tab-separated
    /// output without column names. (The socket counts as secure transport: this works with
    /// `require_secure_transport=ON` too.)
    pub fn sql(&self, sql: &str) -> Result<String, SandboxError> {
        let client = find_program(&["mariadb", "mysql"])?;
        let mut child = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "--user=root",
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // The SQL goes through stdin: it may be large, and it never shows in `ps`.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let sql_owned = sql.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(sql_owned.as_bytes()));
        let output = child.wait_with_output()?;
        let _ = writer.join();
        if !output.status.success() {
            return Err(SandboxError::Failed(format!(
                "SQL failed on sandbox port {}: {}",
                self.port,
                last_lines(&String::from_utf8_lossy(&output.stderr), 3)
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates an account reachable over TCP from loopback with `password` and `grants`
    /// (e.g. `"ALL PRIVILEGES ON *.*"`), and returns its endpoint.
    pub fn create_user(
        &self,
        user: &str,
        password: &str,
        grants: &str,
    ) -> Result<Endpoint, SandboxError> {
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        self.sql(&format!(
            "CREATE OR REPLACE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{quoted}';\n\
             CREATE OR REPLACE USER '{user}'@'localhost' IDENTIFIED BY '{quoted}';\n\
             GRANT {grants} TO '{user}'@'127.0.0.1';\n\
             GRANT {grants} TO '{user}'@'localhost';"
        ))?;
        Ok(Endpoint {
            host: "127.0.0.1".into(),
            port: self.port,
            user: user.into(),
            password: Secret::new(password),
            tls: self.client_tls(),
            stall: coffer_core::client::Stall::target(coffer_core::storage::DEFAULT_STALL_TIMEOUT),
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The guardian removes the folder too; `TempDir` then finds nothing left to do.
        self.stop_guardian(false);
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
