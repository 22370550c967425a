//! The S3 part of the hostile-input catalogue: malformed, oversized and abusive S3
//! requests (signed ones reach the parsers and handlers), each expecting one clean S3
//! error, with the server still answering after every case
//! (`tests/s3/hostile.py`, boto3 and botocore's signer, installed by scripts/test.sh).

mod common;

use std::process::Command;

use common::cluster::{wait_listening, Cluster, Kind};

#[test]
fn catalogue_of_hostile_s3_requests() {
    let s3_port = common::free_port().to_string();
    let cluster = Cluster::start(
        Kind::Native,
        3,
        &[
            "--native-open",
            "--s3-port",
            &s3_port,
            "--s3-access-key",
            "hostile",
            "--s3-secret-key",
            "hostile-secret",
        ],
    );
    let addr = format!("127.0.0.1:{s3_port}");
    wait_listening(&addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/hostile.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("http://{addr}"))
        .env("AWS_ACCESS_KEY_ID", "hostile")
        .env("AWS_SECRET_ACCESS_KEY", "hostile-secret")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("python3 with boto3 (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(
        out.status.success(),
        "hostile S3 cases failed:\n{stdout}\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.index.log_text()
    );
    // The server survived all of it (the script also checked after every case).
    assert!(cluster
        .index
        .pid()
        .is_some_and(|pid| common::proc_fds(pid) > 0));
    assert!(common::wait_for_url(
        &format!("http://{addr}/"),
        std::time::Duration::from_secs(5)
    )
    .is_some());
}
