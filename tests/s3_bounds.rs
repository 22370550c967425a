//! Bounds of the S3 API against the real binary: request bodies bounded before
//! authentication (an anonymous or badly signed POST Object form is refused before its
//! file is read, so the server's memory does not follow the upload's size), POST
//! Object streamed to the store after it, up to `--s3-max-post-size`; SigV2 refused
//! unless `--s3-allow-sigv2` (then dated and checked), SigV4 presigned URLs expiring.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;

use common::cluster::{free_port_run, hoard_bin, wait_http, wait_listening, Proc};

const ACCESS: &str = "bounds";
const SECRET: &str = "bounds-secret";
const MIB: u64 = 1 << 20;

/// `hoard dev` with its S3 API and `extra` flags; (process, S3 address, native URL).
fn dev(data: &Path, extra: &[&str]) -> (Proc, String, String) {
    let port = free_port_run(7);
    let s3_port = common::free_port();
    let mut cmd = vec![
        "env".to_string(),
        format!("HOARD_S3_ACCESS_KEY={ACCESS}"),
        format!("HOARD_S3_SECRET_KEY={SECRET}"),
        hoard_bin().to_string(),
        "dev".into(),
        "--data".into(),
        data.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--s3-port".into(),
        s3_port.to_string(),
    ];
    cmd.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::spawn(cmd, data.with_extension("log"));
    wait_http(&format!("http://127.0.0.1:{port}/-/health"));
    let s3 = format!("127.0.0.1:{s3_port}");
    wait_listening(&s3);
    (proc, s3, format!("http://127.0.0.1:{port}"))
}

/// Runs a few lines of boto3 (`s3` is a client of the test's user on `endpoint`) and
/// returns what they print.
fn boto3(endpoint: &str, code: &str) -> String {
    let script = format!(
        "import boto3, json, sys\n\
         from botocore.client import Config\n\
         s3 = boto3.client('s3', endpoint_url='http://{endpoint}', region_name='us-east-1',\n\
             aws_access_key_id='{ACCESS}', aws_secret_access_key='{SECRET}',\n\
             config=Config(signature_version='s3v4', s3={{'addressing_style': 'path'}},\n\
             retries={{'max_attempts': 1}}))\n\
         {code}\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("python3 with boto3 (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "boto3 failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The form fields of a presigned POST (boto3's `generate_presigned_post`) for
/// `bucket`/`key`, allowing up to `max` bytes.
fn presigned_post(endpoint: &str, bucket: &str, key: &str, max: u64) -> Vec<(String, String)> {
    let out = boto3(
        endpoint,
        &format!(
            "p = s3.generate_presigned_post('{bucket}', '{key}', \
             Conditions=[['content-length-range', 0, {max}]], ExpiresIn=300)\n\
             print(json.dumps(p['fields']))"
        ),
    );
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(out.trim()).expect("fields as JSON");
    fields
        .into_iter()
        .map(|(k, v)| (k, v.as_str().expect("string field").to_string()))
        .collect()
}

/// An answer: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a POST Object form to `addr` `/bucket`: the fields, then a file of `file_len`
/// bytes of `b'x'` — with `Transfer-Encoding: chunked` or a `Content-Length` — from a
/// thread of its own, and reads the answer, which may come before the whole body is
/// sent (then the connection is shut down, which ends the sender).
fn post_form(
    addr: &str,
    bucket: &str,
    fields: &[(String, String)],
    file_len: u64,
    chunked: bool,
) -> Answer {
    const BOUNDARY: &str = "----hoardboundary7MA4YWxkTrZu0gW";
    let mut head = Vec::new();
    for (name, value) in fields {
        write!(
            head,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
        .unwrap();
    }
    write!(
        head,
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .unwrap();
    let tail = format!("\r\n--{BOUNDARY}--\r\n").into_bytes();
    let total = head.len() as u64 + file_len + tail.len() as u64;
    let length_header = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    let request_head = format!(
        "POST /{bucket} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{length_header}\r\n\r\n"
    );
    let stream = TcpStream::connect(addr).expect("connect");
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(request_head.as_bytes())?;
        let mut send = |data: &[u8]| -> std::io::Result<()> {
            if chunked {
                write!(writer, "{:x}\r\n", data.len())?;
                writer.write_all(data)?;
                writer.write_all(b"\r\n")
            } else {
                writer.write_all(data)
            }
        };
        send(&head)?;
        let block = vec![b'x'; 256 << 10];
        let mut left = file_len;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            send(&block[..n])?;
            left -= n as u64;
        }
        send(&tail)?;
        if chunked {
            send(&[])?;
        }
        Ok(())
    });
    let answer = read_answer(&stream);
    let _ = stream.shutdown(Shutdown::Both);
    // The sender either finished or failed on the shut-down socket.
    let _ = sender.join().expect("sender thread");
    answer
}

/// Reads one HTTP/1.1 answer (with a `Content-Length`, or chunked) from `stream`.
fn read_answer(mut stream: &TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut byte).expect("read answer");
        assert!(n > 0, "connection closed before an answer: {buf:?}");
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    loop {
        let done = match length {
            Some(len) => body.len() >= len,
            None => body.ends_with(b"0\r\n\r\n") || status == 204 || status == 304,
        };
        if done {
            break;
        }
        let n = stream.read(&mut byte).expect("read body");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Peak resident memory of `pid` in MiB.
fn peak_mib(pid: u32) -> u64 {
    common::proc_status(pid, "VmHWM") / 1024
}

/// An anonymous 256 MiB form upload (the file streamed chunked, then with a
/// Content-Length) and a badly signed one are refused with AccessDenied before the
/// file is read: the server's peak memory stays far below the upload's size.
#[test]
fn refused_post_object_forms_do_not_grow_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (proc, s3, _) = dev(&tmp.path().join("data"), &[]);
    let pid = proc.pid().expect("running");
    boto3(&s3, "s3.create_bucket(Bucket='forms')");
    let before = peak_mib(pid);

    let anonymous = [("key".to_string(), "anon.bin".to_string())];
    for chunked in [true, false] {
        let answer = post_form(&s3, "forms", &anonymous, 256 * MIB, chunked);
        let peak = peak_mib(pid);
        eprintln!(
            "anonymous 256 MiB form (chunked: {chunked}): {} {}; peak RSS {before} -> {peak} MiB",
            answer.status, answer.body
        );
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(answer.body.contains("AccessDenied"), "{}", answer.body);
        assert!(
            peak < before + 64,
            "peak RSS grew from {before} to {peak} MiB for a refused upload"
        );
    }

    let mut forged = presigned_post(&s3, "forms", "forged.bin", 1 << 30);
    for (name, value) in &mut forged {
        if name == "x-amz-signature" {
            *value = "0".repeat(64);
        }
    }
    let answer = post_form(&s3, "forms", &forged, 256 * MIB, true);
    let peak = peak_mib(pid);
    eprintln!(
        "forged 256 MiB form: {} {}; peak RSS {before} -> {peak} MiB",
        answer.status, answer.body
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer.body.contains("SignatureDoesNotMatch"),
        "{}",
        answer.body
    );
    assert!(
        peak < before + 64,
        "peak RSS grew from {before} to {peak} MiB"
    );
}

/// A signed form (boto3's `generate_presigned_post`) streams its file to the store:
/// 192 MiB sent chunked leave the server's peak memory far below that (the write path's
/// own buffers, ~40 MiB in `hoard dev` with its three volumes, as for a PutObject) and
/// are readable back; past `--s3-max-post-size` or the policy's `content-length-range` the upload
/// is `EntityTooLarge` and nothing is stored; an expired policy, a field the policy
/// does not name, and a SigV2 form (SigV2 is off) are refused. curl's `-F` (what a
/// browser sends) with `success_action_status=201` gets the XML `PostResponse`.
#[test]
fn signed_post_object_streams_to_the_store_within_its_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let max = (200 * MIB).to_string();
    let (proc, s3, native) = dev(&tmp.path().join("data"), &["--s3-max-post-size", &max]);
    let pid = proc.pid().expect("running");
    boto3(&s3, "s3.create_bucket(Bucket='forms')");
    let before = peak_mib(pid);

    let fields = presigned_post(&s3, "forms", "big/${filename}", 1 << 30);
    let answer = post_form(&s3, "forms", &fields, 192 * MIB, true);
    let peak = peak_mib(pid);
    eprintln!(
        "signed 192 MiB form: {} {:?}; peak RSS {before} -> {peak} MiB",
        answer.status, answer.headers
    );
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert!(
        peak < before + 96,
        "peak RSS grew from {before} to {peak} MiB"
    );
    let etag = answer.header("etag").expect("ETag").to_string();
    let head = boto3(
        &s3,
        "h = s3.head_object(Bucket='forms', Key='big/big.bin')\n\
         print(h['ContentLength'], h['ETag'], h['ContentType'])",
    );
    assert_eq!(
        head.trim(),
        format!("{} {etag} application/octet-stream", 192 * MIB)
    );
    // The same bytes through the native API.
    let out = Command::new("curl")
        .args(["-sS", "-L", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(format!("{native}/forms/big/big.bin"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        (192 * MIB).to_string()
    );

    // Past --s3-max-post-size: refused, nothing stored.
    let fields = presigned_post(&s3, "forms", "huge.bin", 1 << 30);
    let answer = post_form(&s3, "forms", &fields, 201 * MIB, false);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("EntityTooLarge"), "{}", answer.body);
    // Past the policy's content-length-range.
    let fields = presigned_post(&s3, "forms", "ranged.bin", MIB);
    let answer = post_form(&s3, "forms", &fields, MIB + 1, true);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("EntityTooLarge"), "{}", answer.body);
    let listed = boto3(
        &s3,
        "print(sorted(o['Key'] for o in s3.list_objects_v2(Bucket='forms').get('Contents', [])))",
    );
    assert_eq!(listed.trim(), "['big/big.bin']");

    // An expired policy; a field the policy does not name.
    let out = boto3(
        &s3,
        "p = s3.generate_presigned_post('forms', 'late.bin', ExpiresIn=-60)\n\
         print(json.dumps(p['fields']))",
    );
    let late: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(out.trim()).unwrap();
    let late: Vec<(String, String)> = late
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect();
    let answer = post_form(&s3, "forms", &late, 10, true);
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("expired"), "{}", answer.body);
    let mut extra = presigned_post(&s3, "forms", "extra.bin", MIB);
    extra.push(("x-amz-meta-sneaky".into(), "1".into()));
    let answer = post_form(&s3, "forms", &extra, 10, true);
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("x-amz-meta-sneaky"), "{}", answer.body);

    // SigV2 forms are refused while SigV2 is off.
    let v2 = [
        ("key".to_string(), "v2.bin".to_string()),
        ("AWSAccessKeyId".to_string(), ACCESS.to_string()),
        ("policy".to_string(), "e30=".to_string()),
        ("signature".to_string(), "AAAA".to_string()),
    ];
    let answer = post_form(&s3, "forms", &v2, 10, true);
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer.body.contains("Signature Version 2"),
        "{}",
        answer.body
    );

    // curl -F, as a browser form, asking for the XML answer.
    let out = boto3(
        &s3,
        "p = s3.generate_presigned_post('forms', 'page.html', \
         Fields={'success_action_status': '201', 'Content-Type': 'text/html'}, \
         Conditions=[{'success_action_status': '201'}, {'Content-Type': 'text/html'}], ExpiresIn=300)\n\
         print(json.dumps(p['fields']))",
    );
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(out.trim()).unwrap();
    let page = tmp.path().join("page.html");
    std::fs::write(&page, "<p>hello</p>").unwrap();
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-w", "\n%{http_code}"]);
    for (k, v) in &fields {
        curl.arg("-F").arg(format!("{k}={}", v.as_str().unwrap()));
    }
    curl.arg("-F")
        .arg(format!("file=@{}", page.display()))
        .arg(format!("http://{s3}/forms"));
    let out = curl.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n201"), "{text}");
    assert!(text.contains("<Key>page.html</Key>"), "{text}");
    let got = boto3(
        &s3,
        "o = s3.get_object(Bucket='forms', Key='page.html')\n\
         print(o['ContentType'], o['Body'].read().decode())",
    );
    assert_eq!(got.trim(), "text/html <p>hello</p>");
}

/// Runs `tests/s3/sigv.py` (boto3) against a `hoard dev` with `extra` flags.
fn signatures(mode: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let (_proc, s3, _) = dev(&tmp.path().join("data"), extra);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/sigv.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("http://{s3}"))
        .arg(mode)
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("python3 with boto3 (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(
        out.status.success(),
        "sigv.py {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// By default SigV2 (headers and presigned URLs) is refused; SigV4 presigned URLs
/// expire.
#[test]
fn sigv2_is_refused_by_default_and_presigned_urls_expire() {
    signatures("off", &[]);
}

/// With `--s3-allow-sigv2`: SigV2 works, a wrong signature or a date 20 minutes off
/// is refused.
#[test]
fn sigv2_when_allowed_is_dated_and_checked() {
    signatures("on", &["--s3-allow-sigv2"]);
}

/// Small s3-tests gaps (`tests/s3/compat.py`): max-keys=0, an empty delimiter,
/// BucketAlreadyOwnedByYou / BucketAlreadyExists (a second user from a keys file),
/// ListObjectVersions of an unversioned bucket.
#[test]
fn s3_tests_small_gaps() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::write(&keys, "other other-secret\n").unwrap();
    let keys = keys.display().to_string();
    let (_proc, s3, _) = dev(&tmp.path().join("data"), &["--s3-keys-file", &keys]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/compat.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("http://{s3}"))
        .args(["other", "other-secret"])
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("python3 with boto3 (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(
        out.status.success(),
        "compat.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
