//! `coffer key generate`: a signing key pair for manifests and drill reports.

use anyhow::Result;
use coffer_core::signing;

use crate::cli::KeyGenerateArgs;
use crate::exit;
use crate::output;

/// `key generate`: writes `coffer.key` (0600) and `coffer.pub` into `--output-dir`; needs no
/// configuration.
pub fn generate(args: &KeyGenerateArgs) -> Result<u8> {
    let keys = signing::generate_key_pair(&args.output_dir)?;
    let secret = absolute(&keys.secret_key_file);
    let public = absolute(&keys.public_key_file);
    if args.output.json {
        output::json(&serde_json::json!({
            "key_id": keys.verify_key.key_id(),
            "public_key": keys.verify_key.to_base64(),
            "secret_key_file": secret,
            "public_key_file": public,
        }))?;
        return Ok(exit::OK);
    }
    println!("key {} written", keys.verify_key.key_id());
    println!(
        "secret key:  {} (mode 0600: keep it on the backup host only)",
        secret.display()
    );
    println!("public key:  {}", public.display());
    println!();
    println!("in the backup host's config, [repository]:");
    println!("  signing_key_file = \"{}\"", secret.display());
    println!("  verify_key = \"{}\"", keys.verify_key.to_base64());
    println!("wherever backups are read (restore host, drill host), [repository]:");
    println!("  verify_key = \"{}\"", keys.verify_key.to_base64());
    println!("check a manifest by hand:");
    println!("  minisign -Vm manifests/ID.json -p {}", public.display());
    Ok(exit::OK)
}

fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
