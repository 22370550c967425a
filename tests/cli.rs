//! The client commands of the real binary (`hoard put|get|rm|unlink|ls|stat|cp`)
//! against a real cluster: what a user sees on stdout, stderr and in the exit status.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::cluster::{hoard_bin, Cluster, Kind};
use md5::{Digest, Md5};

/// Runs `hoard ARGS` against `url` with `stdin` as standard input.
fn hoard_at(url: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(hoard_bin())
        .args(args)
        .env("HOARD_URL", url)
        .env_remove("HOARD_TOKEN")
        .env_remove("HOARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn hoard(c: &Cluster, args: &[&str]) -> Output {
    hoard_at(&c.url, args, b"")
}

/// Asserts success with nothing on stderr; returns stdout.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "quiet on success");
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts failure (exit 1) with one line on stderr and nothing on stdout; returns the
/// line.
fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, b"", "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.trim_end().to_string()
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn put_get_stat_ls_unlink_rm() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let big = value(3 << 20, 7);
    let file = tmp.path().join("big");
    std::fs::write(&file, &big).unwrap();

    ok(hoard(&c, &["put", "/c/big", path(&file)]));
    ok(hoard_at(&c.url, &["put", "c/stdin", "-"], b"hello"));
    ok(hoard_at(&c.url, &["put", "/c/odd key?#%"], b"odd"));

    let out = tmp.path().join("out");
    ok(hoard(&c, &["get", "/c/big", "-o", path(&out)]));
    assert_eq!(std::fs::read(&out).unwrap(), big);
    assert_eq!(ok(hoard(&c, &["get", "/c/stdin"])), "hello");
    assert_eq!(ok(hoard(&c, &["get", "c/odd key?#%"])), "odd");

    let stat = ok(hoard(&c, &["stat", "/c/stdin"]));
    assert!(stat.contains("size      5\n"), "{stat}");
    assert!(
        stat.contains(&format!("md5       {}\n", md5_hex(b"hello"))),
        "{stat}"
    );
    assert!(stat.contains("balance   balanced\n"), "{stat}");
    let replicas = stat.lines().find(|l| l.starts_with("replicas")).unwrap();
    assert_eq!(replicas.split(',').count(), 3, "{stat}");

    assert_eq!(
        ok(hoard(&c, &["ls", "/c/"])),
        "/c/big\n/c/odd key?#%\n/c/stdin\n"
    );
    let long = ok(hoard(&c, &["ls", "--long", "/c/"]));
    let line = long.lines().find(|l| l.ends_with("/c/big")).unwrap();
    assert!(line.contains(&(3 << 20).to_string()), "{long}");
    assert!(line.contains(&md5_hex(&big)), "{long}");

    // Refusals: one line naming the key, exit 1, nothing changed.
    assert_eq!(
        fails(hoard_at(&c.url, &["put", "/c/stdin"], b"other")),
        "hoard: /c/stdin: key exists: DELETE it first (403)"
    );
    assert_eq!(
        fails(hoard(&c, &["get", "/c/nope"])),
        "hoard: /c/nope: not found"
    );
    assert_eq!(
        fails(hoard(&c, &["stat", "/c/nope"])),
        "hoard: /c/nope: not found"
    );
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let err = fails(hoard(&c, &["put", "/c/empty", path(&empty)]));
    assert!(
        err.starts_with("hoard: /c/empty: ") && err.ends_with("(411)"),
        "{err}"
    );
    let err = fails(hoard(&c, &["put", "/-/x", path(&file)]));
    assert!(
        err.starts_with("hoard: /-/x: ") && err.ends_with("(400)"),
        "{err}"
    );
    let err = fails(hoard(&c, &["put", "/c/x", "/nonexistent/file"]));
    assert!(err.starts_with("hoard: /nonexistent/file: "), "{err}");
    assert_eq!(
        ok(hoard(&c, &["get", "/c/stdin"])),
        "hello",
        "the refused put changed nothing"
    );

    ok(hoard(&c, &["unlink", "/c/stdin"]));
    assert_eq!(ok(hoard(&c, &["ls", "--unlinked", "/c/"])), "/c/stdin\n");
    assert_eq!(
        fails(hoard(&c, &["get", "/c/stdin"])),
        "hoard: /c/stdin: not found"
    );
    assert_eq!(
        fails(hoard(&c, &["unlink", "/c/stdin"])),
        "hoard: /c/stdin: not found"
    );
    ok(hoard(&c, &["rm", "/c/stdin"]));
    ok(hoard(&c, &["rm", "/c/big"]));
    assert_eq!(
        fails(hoard(&c, &["rm", "/c/big"])),
        "hoard: /c/big: not found"
    );
    assert_eq!(ok(hoard(&c, &["ls", "/c/"])), "/c/odd key?#%\n");
    assert_eq!(ok(hoard(&c, &["ls", "--unlinked"])), "");
}

#[test]
fn several_urls_are_tried_in_turn() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let urls = format!("{dead},{}", c.url);
    ok(hoard_at(&urls, &["put", "/f/1"], b"via the second"));
    assert_eq!(ok(hoard_at(&urls, &["get", "/f/1"], b"")), "via the second");
    assert_eq!(ok(hoard_at(&urls, &["ls", "/f/"], b"")), "/f/1\n");
    // --url wins over HOARD_URL.
    assert_eq!(
        ok(hoard_at(&dead, &["get", "--url", &c.url, "/f/1"], b"")),
        "via the second"
    );
    // Nothing reachable: a clean one-line error.
    let err = fails(hoard_at(&dead, &["get", "/f/1"], b""));
    assert!(err.starts_with("hoard: /f/1: "), "{err}");
}

#[test]
fn token_is_sent() {
    let c = Cluster::start(Kind::Native, 3, &["--auth-token", "s3cret"]);
    let err = fails(hoard_at(&c.url, &["put", "/t/1"], b"v"));
    assert!(err.ends_with("(401)"), "{err}");
    ok(hoard_at(
        &c.url,
        &["put", "--token", "s3cret", "/t/1"],
        b"v",
    ));
    assert_eq!(ok(hoard(&c, &["get", "/t/1"])), "v");
    assert_eq!(
        ok(hoard(&c, &["ls", "--token", "s3cret", "-l", "/t/"]))
            .split_whitespace()
            .count(),
        3
    );
}

/// Lines of stderr of a verbose cp, sorted.
fn cp_lines(out: Output) -> Vec<String> {
    assert!(out.status.success(), "{out:?}");
    let mut lines: Vec<String> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn cp_round_trip_and_resume() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("top"), value(1000, 1)).unwrap();
    std::fs::write(src.join("a/b/deep file"), value(2 << 20, 2)).unwrap();
    std::fs::write(src.join("a/same"), b"same").unwrap();

    ok(hoard(&c, &["cp", "-r", path(&src), "/up"]));
    assert_eq!(
        ok(hoard(&c, &["ls", "/up/"])),
        "/up/a/b/deep file\n/up/a/same\n/up/top\n"
    );
    let dst = tmp.path().join("dst");
    ok(hoard(&c, &["cp", "-r", "/up/", path(&dst), "--jobs", "2"]));
    for f in ["top", "a/b/deep file", "a/same"] {
        assert_eq!(
            std::fs::read(dst.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }

    // Resume: what is there with the same md5 is skipped, the rest copied.
    std::fs::write(src.join("top"), b"changed").unwrap();
    std::fs::write(src.join("a/new"), b"new").unwrap();
    let lines = cp_lines(hoard(&c, &["-v", "cp", "-r", path(&src), "/up/"]));
    assert_eq!(
        lines,
        [
            "copied /up/a/new",
            "copied /up/top",
            "copied 2, skipped 2 (same md5), failed 0",
            "skipped /up/a/b/deep file",
            "skipped /up/a/same",
        ]
    );
    assert_eq!(ok(hoard(&c, &["get", "/up/top"])), "changed");
    std::fs::write(dst.join("a/same"), b"local edit").unwrap();
    let lines = cp_lines(hoard(&c, &["-v", "cp", "-r", "/up/", path(&dst)]));
    assert_eq!(
        lines,
        [
            "copied /up/a/new",
            "copied /up/a/same",
            "copied /up/top",
            "copied 3, skipped 1 (same md5), failed 0",
            "skipped /up/a/b/deep file",
        ]
    );
    assert_eq!(std::fs::read(dst.join("a/same")).unwrap(), b"same");
    assert_eq!(std::fs::read(dst.join("top")).unwrap(), b"changed");
    // No partial files are left behind.
    let names: Vec<String> = std::fs::read_dir(dst.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("hoard-part")), "{names:?}");

    // A failed file: reported, exit 1, the others still copied.
    let err = hoard(
        &c,
        &["cp", "-r", "/nothing-here/", path(&tmp.path().join("x"))],
    );
    assert!(
        err.status.success(),
        "an empty prefix copies nothing: {err:?}"
    );
    // Usage errors exit with status 2 and say what is wrong.
    let usage = hoard(&c, &["cp", "/up/", path(&dst)]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--recursive"));
}

/// The servers a test starts die with it, even when the test process is killed with
/// SIGKILL and runs no destructor (issue 23: a killed nemesis run left its servers
/// running). The test runs itself again as a child that starts a volume server and
/// waits; the child is killed, and its server must go too.
#[test]
fn servers_die_with_a_killed_test() {
    const ROOT: &str = "HOARD_TEST_ORPHAN_ROOT";
    if let Ok(root) = std::env::var(ROOT) {
        // The child: start a server, say its pid, wait to be killed.
        let root = Path::new(&root);
        let v = common::cluster::Volume::start(Kind::Native, root, "v");
        let pid = v.proc.pid().expect("volume pid");
        std::fs::write(root.join("pid.tmp"), pid.to_string()).unwrap();
        std::fs::rename(root.join("pid.tmp"), root.join("pid")).unwrap();
        loop {
            std::thread::park();
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "servers_die_with_a_killed_test", "--nocapture"])
        .env(ROOT, tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pid: u32 = loop {
        if let Ok(s) = std::fs::read_to_string(tmp.path().join("pid")) {
            break s.parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child test started no server"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child test ended");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // Gone, or a zombie its new parent has not reaped yet.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if alive(pid) {
        // SAFETY: kill(2) of the orphan this test made, before failing.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        panic!("the server {pid} outlived the test process that started it");
    }
}
