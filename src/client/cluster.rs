//! `hoard cluster status|add|remove`: index cluster membership, through the
//! `/-/cluster` endpoints of any member (see `server::admin_cluster`).

use std::io::Write as _;

use clap::{Args, Subcommand};

use super::{Client, ClientError, Conn};

/// Options of `hoard cluster`.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ClusterAction,
}

/// `hoard cluster` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum ClusterAction {
    /// Show the members (id, address, voter or learner, and on the leader how far
    /// each has the log), the leader, the term and retired ids.
    Status {
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a member: ID=HOST:PORT of a `hoard server --node-id ID --join` that is
    /// running. Returns once it has caught up (by snapshot and log) and votes.
    ///
    /// Example: `hoard cluster add 4=10.0.0.4:3000 --url http://10.0.0.1:3000`.
    Add {
        /// The new member, as ID=HOST:PORT (the address other members reach it at).
        member: String,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a member (alive or dead) by id; the id is retired and never reused.
    ///
    /// To replace a dead node: start a new one with a new --node-id and --join, `hoard
    /// cluster add` it, then `hoard cluster remove` the dead one.
    Remove {
        /// The member's id.
        id: u64,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs a `hoard cluster` subcommand.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.action {
        ClusterAction::Status { json, conn } => status(&conn.client()?, json).await,
        ClusterAction::Add { member, conn } => {
            let (id, addr) = member
                .split_once('=')
                .and_then(|(id, addr)| Some((id.trim().parse::<u64>().ok()?, addr.trim())))
                .ok_or_else(|| ClientError::Other(format!("{member:?} is not ID=HOST:PORT")))?;
            let body = serde_json::json!({ "id": id, "addr": addr });
            let answer = call(&conn.client()?, &format!("add node {id}"), |c, base| {
                c.post(format!("{base}/-/cluster/members")).json(&body)
            })
            .await?;
            println!("node {id} added; voters: {}", voters(&answer));
            Ok(())
        }
        ClusterAction::Remove { id, conn } => {
            let answer = call(&conn.client()?, &format!("remove node {id}"), |c, base| {
                c.delete(format!("{base}/-/cluster/members/{id}"))
            })
            .await?;
            println!("node {id} removed; voters: {}", voters(&answer));
            Ok(())
        }
    }
}

async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let view = client
        .send("cluster status", true, |c, base| {
            Ok(c.get(format!("{base}/-/cluster")))
        })
        .await?;
    let view = answer("cluster status", view).await?;
    let mut out = Vec::new();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        let leader = view["leader_id"].as_u64();
        writeln!(
            out,
            "term {}, leader {}, asked node {}",
            view["term"],
            leader.map_or("none".into(), |l| l.to_string()),
            view["node_id"]
        )?;
        writeln!(out, "{:>6}  {:<8}  {:>10}  address", "id", "kind", "log")?;
        for m in view["members"].as_array().into_iter().flatten() {
            let id = m["id"].as_u64().unwrap_or(0);
            let mut kind = m["kind"].as_str().unwrap_or("?").to_string();
            if Some(id) == leader {
                kind = "leader".into();
            }
            let log = m["matched"].as_u64().map_or("-".into(), |i| i.to_string());
            let addr = m["addr"].as_str().unwrap_or("?");
            writeln!(out, "{id:>6}  {kind:<8}  {log:>10}  {addr}")?;
        }
        let retired: Vec<String> = view["retired"]
            .as_array()
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        if !retired.is_empty() {
            writeln!(out, "retired ids: {}", retired.join(", "))?;
        }
    }
    std::io::stdout().write_all(&out)?;
    Ok(())
}

/// Sends a membership change (never repeated once a server may have received it).
async fn call<F>(client: &Client, what: &str, build: F) -> Result<serde_json::Value, ClientError>
where
    F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
{
    let resp = client
        .send(what, false, |c, base| Ok(build(c, base)))
        .await?;
    answer(what, resp).await
}

/// The JSON of a 200, or the server's `{"error": …}` as the error.
pub(super) async fn answer(
    what: &str,
    resp: reqwest::Response,
) -> Result<serde_json::Value, ClientError> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]
        .as_str()
        .map_or_else(|| status.to_string(), str::to_string);
    Err(ClientError::Status {
        what: what.to_string(),
        status: status.as_u16(),
        message,
    })
}

fn voters(answer: &serde_json::Value) -> String {
    answer["voters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
