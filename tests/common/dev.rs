//! `hoard dev` with every front-end on (HTTP, S3, binary protocol, JSON interface) on
//! free ports, and the value files of its three volumes on disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hoard::placement::file_from_path;

use super::cluster::{free_port_run, get_json, hoard_bin, wait_http, Proc};

/// How long the store gets to come up with its volumes.
const START: Duration = Duration::from_secs(30);

/// A running `hoard dev`.
pub struct DevStore {
    /// The index server's port (the volumes are on the next three).
    pub port: u16,
    /// `http://127.0.0.1:port`.
    pub http: String,
    /// The S3 API's base URL.
    pub s3: String,
    /// The binary protocol's `host:port`.
    pub tcp: String,
    /// The JSON interface's base URL.
    pub json: String,
    /// `--data`: the index and `volume1`…`volume3`.
    pub data: PathBuf,
    /// The process.
    pub proc: Proc,
    /// Holds `data` (and whatever else a test keeps there).
    pub tmp: tempfile::TempDir,
    /// The S3 credentials it was started with.
    s3_keys: (String, String),
}

/// One value file on a volume of the store.
#[derive(Debug, Clone)]
pub struct ValueFile {
    /// Which volume (1–3): its port is the store's port + this.
    pub volume: u16,
    /// Its path below the volume's root (`[svXX/]aa/bb/<base64 key>[~gen]`).
    pub rel: String,
    /// Its path on disk.
    pub path: PathBuf,
    /// The key it holds.
    pub key: Vec<u8>,
    /// The generation of the value it holds.
    pub gen: u64,
}

impl DevStore {
    /// Starts `hoard dev` with S3 credentials `access`/`secret` and `extra` flags, and
    /// waits until its three volumes are up.
    pub async fn start(access: &str, secret: &str, extra: &[&str]) -> DevStore {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        // The index, three volumes, then S3, binary and JSON at their offsets.
        let port = free_port_run(7);
        let mut cmd = vec![
            "env".to_string(),
            format!("HOARD_S3_ACCESS_KEY={access}"),
            format!("HOARD_S3_SECRET_KEY={secret}"),
            hoard_bin().to_string(),
            "dev".into(),
            "--data".into(),
            data.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--s3-port".into(),
            (port + 4).to_string(),
            "--tcp-port".into(),
            (port + 5).to_string(),
            "--json-port".into(),
            (port + 6).to_string(),
        ];
        cmd.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(cmd, tmp.path().join("dev.log"));
        let dev = DevStore {
            port,
            http: format!("http://127.0.0.1:{port}"),
            s3: format!("http://127.0.0.1:{}", port + 4),
            tcp: format!("127.0.0.1:{}", port + 5),
            json: format!("http://127.0.0.1:{}", port + 6),
            data,
            proc,
            tmp,
            s3_keys: (access.to_string(), secret.to_string()),
        };
        dev.wait_ready().await;
        dev
    }

    /// Waits for the index and its three volumes (after a start or a restart).
    pub async fn wait_ready(&self) {
        wait_http(&format!("{}/-/health", self.http));
        let deadline = Instant::now() + START;
        loop {
            let h = get_json(format!("{}/-/health", self.http)).await;
            let up = h["volumes"]
                .as_array()
                .map_or(0, |vs| vs.iter().filter(|v| v["up"] == true).count());
            if up == 3 {
                return;
            }
            assert!(Instant::now() < deadline, "volumes did not come up: {h}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a step of `tests/s3/overwrite.py` (boto3) against the store's S3 API; its
    /// output, trimmed. Panics with the script's output when it fails.
    pub fn s3_step(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/overwrite.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(&self.s3)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.s3_keys.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.s3_keys.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .expect("python3 (scripts/test.sh installs it with boto3)");
        assert!(
            out.status.success(),
            "overwrite.py {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Every value file on the three volumes, in volume then path order.
    pub fn value_files(&self) -> Vec<ValueFile> {
        let mut out = Vec::new();
        for volume in 1..=3u16 {
            let root = self.data.join(format!("volume{volume}"));
            let mut paths = walk(&root);
            paths.sort();
            for path in paths {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let inner = match rel.split_once('/') {
                    Some((sv, rest)) if sv.starts_with("sv") => rest,
                    _ => rel.as_str(),
                };
                if let Some((key, gen)) = file_from_path(&format!("/{inner}")) {
                    out.push(ValueFile {
                        volume,
                        rel: rel.clone(),
                        path,
                        key,
                        gen,
                    });
                }
            }
        }
        out
    }

    /// The value files of `key` (any generation), in volume order.
    pub fn files_of(&self, key: &[u8]) -> Vec<ValueFile> {
        self.value_files()
            .into_iter()
            .filter(|f| f.key == key)
            .collect()
    }
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
