//! The dashboard at `/-/ui` in a real browser: a cluster of the real binaries (index +
//! 3 native volumes), headless Chromium driven through chromedriver, and checks on the
//! rendered page — the DOM after the page's scripts ran, never the HTML source. Every
//! wait polls with a deadline and fails with a screenshot. Screenshots (1400×1000 and a
//! 390×844 phone) go to `target/dashboard-screenshots/`.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::cluster::{client, Cluster, Kind, Volume};
use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

/// Keys written by the test.
const KEYS: usize = 90;

/// How soon a stopped volume must show as down: prober (500 ms + `--voltimeout` 1 s)
/// plus the page's 1.5 s poll, with room for a loaded machine.
const DOWN_WITHIN: Duration = Duration::from_secs(10);

const WAIT: Duration = Duration::from_secs(20);

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots")
}

fn key(i: usize) -> String {
    format!("/dash/key-{i:03}")
}

/// Size of key `i`'s value: 1–4 KiB.
fn size(i: usize) -> usize {
    1024 + (i * 37) % 3072
}

/// PUTs keys `0..n` (values of [`size`]).
async fn populate(c: &Cluster, n: usize) {
    let http = client();
    let statuses: Vec<StatusCode> = stream::iter(0..n)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{}{}", c.url, key(i)));
            let body = vec![b'a' + (i % 26) as u8; size(i)];
            async move { http.put(url).body(body).send().await.unwrap().status() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
}

/// Reads keys in the background (about 40 requests/s, at most 2 minutes) so the
/// charts have something to show; stops when `stop` is set.
fn traffic(c: &Cluster, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let (http, base) = (client(), c.url.clone());
    tokio::spawn(async move {
        for i in 0..4800 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let _ = http.get(format!("{base}{}", key(i % KEYS))).send().await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// The volume cards as rendered: `[[server, data-state, visible text], …]`.
const VOLUMES_JS: &str = "return [...document.querySelectorAll('#volumes [data-volume]')]
    .map(e => [e.dataset.volume, e.dataset.state, e.innerText]);";

/// The rendered volume cards once every one of `servers` is shown up (`null` before).
fn volumes_up_js(servers: &[String]) -> String {
    format!(
        "const want = {}; const cards = [...document.querySelectorAll('#volumes [data-volume]')];
         const shown = want.map(s => cards.find(e => e.dataset.volume === s));
         return shown.every(e => e && e.dataset.state === 'up' && /\\bup\\b/i.test(e.innerText)
             && e.getBoundingClientRect().width > 0) ? cards.length : null;",
        serde_json::to_string(servers).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() {
    // Three volumes; the index starts with two (replicas 2) so that registering the
    // third leaves keys to move: the rebalance has work, and progress to show.
    let tmp = tempfile::tempdir().unwrap();
    let volumes: Vec<Volume> = (0..3)
        .map(|i| Volume::start(Kind::Native, tmp.path(), &format!("vol{i}")))
        .collect();
    let names: Vec<String> = volumes.iter().map(|v| v.addr.clone()).collect();
    let scratch = tmp.path().join("browser");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut c = Cluster::with_volumes(tmp, volumes, &names[..2].join(","), &["--replicas", "2"]);
    c.wait_all_up().await;
    populate(&c, KEYS).await;
    let added = client()
        .post(format!("{}/-/admin/volumes", c.url))
        .body(format!(r#"{{"add": "{}"}}"#, names[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        added.status(),
        StatusCode::OK,
        "{}",
        added.text().await.unwrap()
    );
    c.wait_volume(&names[2], true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&c, Arc::clone(&stop));

    let shots = shots_dir();
    let b = Browser::start(&scratch, &shots, 1400, 1000).await;
    b.goto(&format!("{}/-/ui", c.url)).await;

    // Every volume listed, up; the single index node; the key counts.
    let cards = b
        .wait_js("every volume listed as up", WAIT, &volumes_up_js(&names))
        .await;
    assert_eq!(cards, 3, "{}", b.js(VOLUMES_JS).await);
    b.wait_js(
        "the index node as single leader",
        WAIT,
        "const n = document.querySelector('#nodes [data-role=\"single\"]');
         return n && /single · leader/i.test(n.innerText) ? n.innerText : null;",
    )
    .await;
    b.wait_js(
        "the live key count",
        WAIT,
        &format!(
            "const t = document.getElementById('stats').innerText;
             return /Live keys\\s*{KEYS}\\b/i.test(t) ? t : null;"
        ),
    )
    .await;
    // The scrubber's tile: a pass under way or the passes done (on by default).
    b.wait_js(
        "the scrub tile",
        WAIT,
        "const t = document.getElementById('stats').innerText;
         return /Scrub\\s*(pass \\d+|\\d+ passes)/i.test(t) ? t : null;",
    )
    .await;

    // Key browser: a prefix, pages of 25, a key's record and its download link.
    b.type_into("#key-prefix", "/dash/").await;
    b.click("#key-limit option[value=\"25\"]").await;
    b.click("#key-list").await;
    let listed_js =
        "return [...document.querySelectorAll('#key-list-items button')].map(e => e.innerText);";
    let first_page = b
        .wait_js(
            "the first page of keys",
            WAIT,
            &format!(
                "const k = (() => {{ {listed_js} }})(); return k.length === 25 && k[0] === '{}' ? k : null;",
                key(0)
            ),
        )
        .await;
    let expected: Vec<String> = (0..25).map(key).collect();
    assert_eq!(first_page, serde_json::json!(expected));
    b.click("#key-next").await;
    b.wait_js(
        "the second page of keys",
        WAIT,
        &format!(
            "const k = (() => {{ {listed_js} }})(); return k.length === 25 && k[0] === '{}' && k[24] === '{}' ? k : null;",
            key(25),
            key(49)
        ),
    )
    .await;
    let chosen_i = 30;
    let chosen = key(chosen_i);
    b.click(&format!("#key-list-items button[data-key=\"{chosen}\"]"))
        .await;
    let head = client()
        .head(format!("{}{chosen}", c.url))
        .send()
        .await
        .unwrap();
    let md5 = head.headers()["content-md5"].to_str().unwrap().to_owned();
    let size = size(chosen_i);
    let record = b
        .wait_js(
            "the chosen key's record",
            WAIT,
            &format!(
                "const k = document.getElementById('record-key'); const f = document.getElementById('record-fields');
                 if (!k || k.innerText !== '{chosen}' || !f) return null;
                 const a = document.querySelector('#key-record a');
                 return [f.innerText, a ? a.getAttribute('href') : ''];"
            ),
        )
        .await;
    let fields = record[0].as_str().unwrap();
    assert!(fields.contains(&md5), "md5 {md5} not shown: {fields}");
    let grouped = format!("{},{:03} bytes", size / 1000, size % 1000);
    assert!(
        fields.contains(&grouped),
        "size {grouped} not shown: {fields}"
    );
    assert!(fields.contains("Replicas (2)"), "{fields}");
    assert_eq!(record[1], chosen, "download link");
    let download = client()
        .get(format!("{}{}", c.url, record[1].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        download.status(),
        StatusCode::FOUND,
        "the link redirects to a replica"
    );

    // A rebalance started from the button, throttled so it runs for a few seconds,
    // shows its progress while it runs, then its outcome.
    b.type_into("#max-rate", "10").await;
    b.click("#start-rebalance").await;
    let progress_js = "const j = document.getElementById('job-running');
        if (!j || j.dataset.kind !== 'rebalance') return null;
        const bar = j.querySelector('.bar > span').getBoundingClientRect().width;
        const text = document.getElementById('job-progress-text').innerText;
        const m = /^(\\d+) \\/ (\\d+) keys/.exec(text);
        return m && bar > 0 && +m[1] > 0 && +m[1] < +m[2] ? [+m[1], +m[2], text] : null;";
    let first = b
        .wait_js("the rebalance in progress", WAIT, progress_js)
        .await;
    assert_eq!(first[1], KEYS, "total keys of the job: {first}");
    b.screenshot("desktop-rebalance").await;
    b.emulate(Some((390, 844))).await;
    b.js("document.getElementById('jobs-h').closest('section').scrollIntoView(); return null;")
        .await;
    b.screenshot("phone-rebalance").await;
    b.emulate(None).await;
    let later = b
        .wait_js(
            "the rebalance progressing",
            WAIT,
            &format!(
                "const p = (() => {{ {progress_js} }})();
                 const done = document.querySelector('#job-last-summary[data-kind=\"rebalance\"][data-state=\"done\"]');
                 return (p && p[0] > {}) ? p : (done ? 'done' : null);",
                first[0]
            ),
        )
        .await;
    b.wait_js(
        "the rebalance done",
        Duration::from_secs(60),
        "const d = document.querySelector('#job-last-summary[data-kind=\"rebalance\"]');
         return d && d.dataset.state === 'done' && /moved \\d+/.test(d.parentElement.innerText) ? d.innerText : null;",
    )
    .await;
    let last = c.admin_status().await["last"].clone();
    assert!(
        last["counts"]["moved"].as_u64().unwrap_or(0) > 0 && last["counts"]["failed"] == 0,
        "the button's rebalance moved keys: {last}; progress seen {first} then {later}"
    );

    // A stopped volume shows as down (colour and word) within a few seconds.
    c.volumes[1].stop();
    let stopped = Instant::now();
    let down_js = format!(
        "const e = document.querySelector('#volumes [data-volume=\"{}\"]');
         if (!e || e.dataset.state !== 'down' || !/\\bdown\\b/i.test(e.innerText)) return null;
         const up = document.querySelector('#volumes [data-state=\"up\"]');
         return [e.innerText, getComputedStyle(e).backgroundColor,
                 document.getElementById('health-pill').innerText,
                 up ? getComputedStyle(up).backgroundColor : ''];",
        names[1]
    );
    let down = b
        .wait_js("the stopped volume as down", DOWN_WITHIN, &down_js)
        .await;
    let took = stopped.elapsed();
    assert!(
        down[1] != "rgba(0, 0, 0, 0)" && down[1] != down[3],
        "a down volume stands out in colour: {down}"
    );
    assert!(
        down[2]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("degraded"),
        "{down}"
    );
    let others = b.js(VOLUMES_JS).await;
    for card in others.as_array().unwrap() {
        if card[0] != names[1].as_str() {
            assert_eq!(card[1], "up", "only the stopped volume is down: {others}");
        }
    }
    b.js("window.scrollTo(0, 0); return null;").await;
    b.screenshot("desktop-volume-down").await;
    b.emulate(Some((390, 844))).await;
    b.js("window.scrollTo(0, 0); return null;").await;
    b.screenshot("phone-volume-down").await;
    b.emulate(None).await;
    b.screenshot_full("desktop-full", 1400).await;
    b.screenshot_full("phone-full", 390).await;
    eprintln!(
        "volume shown down {took:?} after it stopped; screenshots in {}",
        shots.display()
    );

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    b.quit();
}

/// With `--auth-mode all`, the page itself loads, asks for the token, and with it shows
/// the cluster and runs admin actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_asks_for_the_token() {
    let token = "dashboard-secret";
    let c = Cluster::start(
        Kind::Native,
        3,
        &["--auth-token", token, "--auth-mode", "all"],
    );
    let overview = client()
        .get(format!("{}/-/ui/api/overview", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        overview.status(),
        StatusCode::UNAUTHORIZED,
        "the data needs the token"
    );
    let page = client()
        .get(format!("{}/-/ui", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the page itself is open");
    let scratch = c.tmp.path().join("browser");
    std::fs::create_dir_all(&scratch).unwrap();
    let b = Browser::start(&scratch, &shots_dir(), 1400, 1000).await;
    b.goto(&format!("{}/-/ui", c.url)).await;
    b.wait_js(
        "the token prompt",
        WAIT,
        "const o = document.getElementById('token-overlay');
         return !o.hidden && o.getBoundingClientRect().width > 0
             && document.querySelectorAll('#volumes [data-volume]').length === 0;",
    )
    .await;
    b.screenshot("auth-prompt").await;
    b.type_into("#token-input", token).await;
    b.click("#token-form button[type=submit]").await;
    let names: Vec<String> = c.volumes.iter().map(|v| v.addr.clone()).collect();
    b.wait_js("every volume after the token", WAIT, &volumes_up_js(&names))
        .await;
    b.click("#start-verify").await;
    b.wait_js(
        "the verify started with the token",
        WAIT,
        "const d = document.querySelector('#job-last-summary[data-kind=\"verify\"]')
             || document.querySelector('#job-running[data-kind=\"verify\"]');
         return d ? d.innerText : null;",
    )
    .await;
    let status = client()
        .get(format!("{}/-/admin/status", c.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let job = if status["running"].is_null() {
        &status["last"]
    } else {
        &status["running"]
    };
    assert_eq!(job["kind"], "verify", "{status}");
    b.quit();
}
