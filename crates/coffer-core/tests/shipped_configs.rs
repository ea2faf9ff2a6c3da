//! Every configuration example shipped in `config/` parses, with no unknown key.

use std::path::PathBuf;

use coffer_core::config::Config;

#[test]
fn every_shipped_example_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // Secrets come from the environment here: the example's secret files are on a server.
        let env = |name: &str| match name {
            "COFFER_SOURCE_PASSWORD"
            | "COFFER_TARGET_PASSWORD"
            | "AWS_ACCESS_KEY_ID"
            | "AWS_SECRET_ACCESS_KEY" => Some("x".to_string()),
            _ => None,
        };
        Config::load(&path, &env).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        parsed += 1;
    }
    assert!(
        parsed >= 2,
        "expected the shipped examples in {}",
        dir.display()
    );
}
