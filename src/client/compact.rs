//! `hoard compact --url URL`: online compaction of a running index server's database
//! through `POST /-/admin/compact` (see `server::admin_ops`).

use super::{status_error, Client};

/// Asks the index server at `url` to compact its index file now, sending `token` as
/// the bearer token; prints its answer (sizes before and after, how long reads and
/// writes were paused) as JSON. One server: each member of an index cluster has its
/// own file.
pub async fn run(url: &str, token: Option<String>) -> anyhow::Result<()> {
    let client = Client::new(&[url.to_string()], token)?;
    let resp = client
        .send("compact", false, |c, base| {
            Ok(c.post(format!("{base}/-/admin/compact")))
        })
        .await?;
    if !resp.status().is_success() {
        return Err(status_error("compact", resp).await.into());
    }
    let answer: serde_json::Value = resp.json().await?;
    println!("{answer}");
    Ok(())
}
