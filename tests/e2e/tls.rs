//! TLS to the database: a source and a restore target with certificates of a CA made here, both
//! started with `require_secure_transport=ON` (plaintext TCP is refused). With
//! `tls = "verify-ca"`, `check`, full and incremental backups, the stream, a point-in-time restore
//! and the drill (managed and external) all work; a wrong CA, a plaintext client and a missing
//! client certificate fail with errors that say why.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use coffer_verifier::sandbox::SandboxTls;
use coffer_verifier::{BinlogFormat, Sandbox, SandboxOptions};

use crate::util::{BACKUP_GRANTS, Repo, Run, Setup, gtid_position, private_source, restore_into};

/// A CA, a server certificate it signed (for 127.0.0.1 and localhost), a client certificate it
/// signed, and an unrelated CA.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    wrong_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is needed for the TLS tests (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let self_signed = |name: &str, cn: &str| {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            )
        };
        self_signed("ca", "coffer test CA");
        self_signed("wrong-ca", "coffer test CA");
        let signed = |name: &str, cn: &str, extensions: &str| {
            std::fs::write(d.join(format!("{name}.ext")), extensions).unwrap();
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        };
        signed(
            "server",
            "127.0.0.1",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        signed(
            "client",
            "coffer_x509",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        );
        Pki {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            wrong_ca: d.join("wrong-ca.pem"),
            _dir: dir,
        }
    })
}

/// A server that speaks TLS with the test CA's certificate and refuses plaintext TCP.
fn tls_options(server_id: u32) -> SandboxOptions {
    let pki = pki();
    SandboxOptions {
        server_id,
        // The external drill replays row events under a prefixed name.
        binlog_format: BinlogFormat::Row,
        tls: Some(SandboxTls {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            ca_file: pki.ca.clone(),
            require_secure_transport: true,
        }),
        ..Default::default()
    }
}

/// The TLS source shared by the tests here, with the backup account and database `app`.
fn tls_source() -> &'static Sandbox {
    static SOURCE: OnceLock<Sandbox> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let source = private_source(tls_options(1301));
        source
            .sql(
                "CREATE DATABASE app;
                 CREATE TABLE app.invoices (id INT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB;
                 INSERT INTO app.invoices VALUES (1, 'before the full backup'), (2, 'also before');",
            )
            .unwrap();
        source
    })
}

/// A config for the TLS source with `tls_keys` added to `[source]` (the config's last section).
fn setup_with(tls_keys: &str) -> Setup {
    let setup = Setup::with_source(tls_source(), Repo::Folder, &["app"], "");
    setup.append_config(tls_keys);
    setup
}

fn verify_ca(ca: &Path) -> String {
    format!("tls = \"verify-ca\"\nca_file = \"{}\"\n", ca.display())
}

fn wait_fully_archived(setup: &Setup, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let run = setup.run(&["status", "--json"]);
        if run.code == 0 && run.json()["recovery_point"]["fully_archived"] == true {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not catch up within {within:?}: {run:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn verify_ca_works_end_to_end() {
    let pki = pki();
    let source = tls_source();
    let setup = setup_with(&verify_ca(&pki.ca));

    let check = setup.run(&["check"]);
    assert_eq!(check.code, 0, "{check:#?}");
    assert!(check.stdout.contains("privileges sufficient"), "{check:#?}");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    source
        .sql("INSERT INTO app.invoices VALUES (3, 'archived'); FLUSH BINARY LOGS;")
        .unwrap();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);

    // The stream, briefly: a write shipped from the active file, then SIGTERM.
    let stream = setup
        .coffer(&["binlog", "stream", "--interval", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    source
        .sql("INSERT INTO app.invoices VALUES (4, 'streamed');")
        .unwrap();
    wait_fully_archived(&setup, Duration::from_secs(30));
    Command::new("kill")
        .args(["-TERM", &stream.id().to_string()])
        .status()
        .unwrap();
    let stopped = stream.wait_with_output().unwrap();
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let segments = setup
        .run(&["backup", "list", "--kind", "segment", "--json"])
        .json();
    assert!(!segments.as_array().unwrap().is_empty(), "{segments:#}");

    // A point-in-time restore into a target that refuses plaintext too (`[restore]` keys).
    let target = private_source(tls_options(1302));
    target
        .create_user("restorer", "pw", "ALL PRIVILEGES ON *.*")
        .unwrap();
    setup.append_config(&format!("\n[restore]\n{}", verify_ca(&pki.ca)));
    let restore = restore_into(&setup, &target, &["--at-gtid", &gtid_position(source)]);
    assert_eq!(restore.code, 0, "{restore:#?}");
    let rows = |s: &Sandbox| {
        s.sql("SELECT id, note FROM app.invoices ORDER BY id")
            .unwrap()
    };
    assert_eq!(rows(&target), rows(source));
    assert!(rows(&target).contains("streamed"));

    // The managed drill sandbox is local and plaintext; the source's TLS does not reach it.
    let drill = |setup: &Setup| {
        let run = setup.run(&["drill", "run", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("no JSON report ({e}): {run:#?}"));
        assert_eq!(run.code, 0, "{report:#}");
        assert_eq!(report["verdict"], "pass", "{report:#}");
        report
    };
    drill(&setup);

    // An external drill server reached with TLS: the restore, the checks and the SQL probe (the
    // `mariadb` client) all go over it.
    setup.append_config(&format!(
        "\n[drill]\nsandbox = \"external\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"restorer\"\n\
         password_file = \"secrets/drill\"\ndatabase_prefix = \"drill_\"\n{}\n\
         [[drill.sql_checks]]\nname = \"rows\"\nquery = \"SELECT COUNT(*) FROM invoices\"\nexpect = \"4\"\n",
        target.port(),
        verify_ca(&pki.ca)
    ));
    std::fs::write(setup.dir.path().join("secrets/drill"), "pw\n").unwrap();
    let report = drill(&setup);
    assert!(
        report["sandbox"].as_str().unwrap().contains("external"),
        "{report:#}"
    );
}

#[test]
fn tls_failures_say_why() {
    let pki = pki();
    let source = tls_source();

    // A certificate from another CA.
    let wrong = setup_with(&verify_ca(&pki.wrong_ca));
    let run = wrong.run(&["backup", "run", "full"]);
    run.expect_code(3);
    let line = run.error_line();
    assert!(
        line.contains("TLS")
            && line.contains(&pki.wrong_ca.display().to_string())
            && line.contains("not signed by the CA"),
        "{line}"
    );
    assert_eq!(run.stderr.matches("coffer: error:").count(), 1, "{run:#?}");
    let check = wrong.run(&["check"]);
    assert_eq!(check.code, 3, "{check:#?}");
    assert!(check.stdout.contains("not signed by the CA"), "{check:#?}");

    // Plaintext against require_secure_transport=ON.
    let plain = setup_with("tls = \"disabled\"\n");
    let run = plain.run(&["backup", "run", "full"]);
    run.expect_code(3);
    assert!(
        run.error_line().contains("require_secure_transport"),
        "{run:#?}"
    );

    // `required` encrypts without checking the certificate: the wrong CA file does not matter;
    // `verify-identity` also checks that the certificate names 127.0.0.1.
    let required = setup_with(&format!(
        "tls = \"required\"\nca_file = \"{}\"\n",
        pki.wrong_ca.display()
    ));
    let check = required.run(&["check"]);
    assert_eq!(check.code, 0, "{check:#?}");
    let identity = setup_with(&format!(
        "tls = \"verify-identity\"\nca_file = \"{}\"\n",
        pki.ca.display()
    ));
    let check = identity.run(&["check"]);
    assert_eq!(check.code, 0, "{check:#?}");

    // An account that requires a client certificate: refused without one, served with one (by
    // sqlx and by mariadb-dump).
    source
        .sql(&format!(
            // Kept out of the binlog that the other test archives and replays.
            "SET SESSION sql_log_bin = 0;
             CREATE OR REPLACE USER 'coffer_x509'@'127.0.0.1' IDENTIFIED BY 'x509-pw' REQUIRE X509;
             GRANT {BACKUP_GRANTS} TO 'coffer_x509'@'127.0.0.1';"
        ))
        .unwrap();
    let x509 = |extra: &str| {
        let setup = setup_with(&format!("{}{extra}", verify_ca(&pki.ca)));
        Run::from(
            setup
                .coffer(&["backup", "run", "full"])
                .env("COFFER_SOURCE_USER", "coffer_x509")
                .env("COFFER_SOURCE_PASSWORD", "x509-pw")
                .output()
                .unwrap(),
        )
    };
    x509("").expect_code(3);
    let run = x509(&format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.client_cert.display(),
        pki.client_key.display()
    ));
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn tls_settings_are_checked_at_load() {
    let pki = pki();
    let setup = Setup::with_source(tls_source(), Repo::Folder, &["app"], "");
    let base = std::fs::read_to_string(&setup.config).unwrap();
    let config_error = |extra: &str| {
        std::fs::write(&setup.config, format!("{base}{extra}")).unwrap();
        let run = setup.run(&["backup", "list"]);
        run.expect_code(2);
        run.error_line()
    };
    let line = config_error("tls = \"verify-ca\"\n");
    assert!(line.contains("`source.ca_file`: missing"), "{line}");
    let line = config_error("tls = \"verify-ca\"\nca_file = \"no-such-ca.pem\"\n");
    assert!(
        line.contains("`source.ca_file`") && line.contains("no-such-ca.pem"),
        "{line}"
    );
    let line = config_error(&format!(
        "tls = \"required\"\ncert_file = \"{}\"\n",
        pki.client_cert.display()
    ));
    assert!(line.contains("`source.key_file`: missing"), "{line}");
    let line = config_error("tls = \"verify_ca\"\n");
    assert!(line.contains("source.tls"), "{line}");
    // The restore target inherits the source's settings, and is checked the same way.
    let line = config_error("\n[restore]\ntls = \"verify-identity\"\n");
    assert!(line.contains("`restore.ca_file`: missing"), "{line}");
}
