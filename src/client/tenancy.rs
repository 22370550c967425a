//! `hoard key create|list|delete` and `hoard bucket list|allow|deny|quota`: tenancy
//! administration through the `/-/admin/keys` and `/-/admin/buckets` endpoints of any
//! index server (see `server::admin_tenancy`), with the admin token (`--token`).

use std::io::Write as _;

use clap::{Args, Subcommand};

use super::cluster::answer;
use super::{Client, ClientError, Conn};

/// Options of `hoard key`.
#[derive(Debug, Args, Clone)]
pub struct KeyCmd {
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
}

/// `hoard key` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum KeyAction {
    /// Create an S3 access key (a user) and print its id and secret — the only time
    /// the secret is shown.
    Create {
        /// A name for people.
        name: String,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
    /// List the access keys (id, seeded from the flags or created, name).
    List {
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an access key: its requests are refused from now on, and its id is
    /// never valid again.
    Delete {
        /// The access key id.
        id: String,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
}

/// Options of `hoard bucket`.
#[derive(Debug, Args, Clone)]
pub struct BucketCmd {
    /// What to do.
    #[command(subcommand)]
    pub action: BucketAction,
}

/// Which grant `allow` / `deny` change.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// Read objects, list them.
    #[arg(long)]
    pub read: bool,
    /// Write and delete objects.
    #[arg(long)]
    pub write: bool,
    /// Everything, deleting the bucket included.
    #[arg(long)]
    pub owner: bool,
}

impl Which {
    fn name(&self) -> &'static str {
        if self.owner {
            "owner"
        } else if self.write {
            "write"
        } else {
            "read"
        }
    }
}

/// `hoard bucket` subcommands.
#[derive(Debug, Subcommand, Clone)]
pub enum BucketAction {
    /// List the buckets: owner, grants, quota and usage.
    List {
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
    /// Grant an access key read, write or owner on a bucket.
    ///
    /// Example: `hoard bucket allow --read photos --key HK… --url http://h:3000 --token T`.
    Allow {
        /// The grant.
        #[command(flatten)]
        which: Which,
        /// The bucket.
        bucket: String,
        /// The access key id.
        #[arg(long)]
        key: String,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
    /// Take a grant back (the bucket's creator holds `owner` until denied it).
    Deny {
        /// The grant.
        #[command(flatten)]
        which: Which,
        /// The bucket.
        bucket: String,
        /// The access key id.
        #[arg(long)]
        key: String,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
    /// Set a bucket's quota: writes beyond it are refused (S3 `QuotaExceeded`, 403).
    /// A limit not given is removed.
    Quota {
        /// The bucket.
        bucket: String,
        /// Most bytes of live objects.
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Most live objects.
        #[arg(long)]
        max_objects: Option<u64>,
        /// Server URLs and token.
        #[command(flatten)]
        conn: Conn,
    },
}

/// Sends a change (never repeated once a server may have received it).
async fn call<F>(client: &Client, what: &str, build: F) -> Result<serde_json::Value, ClientError>
where
    F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
{
    let resp = client
        .send(what, false, |c, base| Ok(build(c, base)))
        .await?;
    answer(what, resp).await
}

/// Runs a `hoard key` subcommand.
pub async fn key(args: KeyCmd) -> anyhow::Result<()> {
    let mut out = Vec::new();
    match args.action {
        KeyAction::Create { name, conn } => {
            let body = serde_json::json!({ "name": name });
            let made = call(&conn.client()?, "create key", |c, base| {
                c.post(format!("{base}/-/admin/keys")).json(&body)
            })
            .await?;
            writeln!(out, "access key id: {}", made["id"].as_str().unwrap_or("?"))?;
            writeln!(
                out,
                "secret key:    {}",
                made["secret"].as_str().unwrap_or("?")
            )?;
        }
        KeyAction::List { conn } => {
            let keys = call(&conn.client()?, "list keys", |c, base| {
                c.get(format!("{base}/-/admin/keys"))
            })
            .await?;
            for k in keys.as_array().into_iter().flatten() {
                let origin = if k["seeded"].as_bool() == Some(true) {
                    "seeded"
                } else {
                    "created"
                };
                let (id, name) = (
                    k["id"].as_str().unwrap_or("?"),
                    k["name"].as_str().unwrap_or(""),
                );
                writeln!(out, "{id}  {origin:<7}  {name}")?;
            }
        }
        KeyAction::Delete { id, conn } => {
            call(&conn.client()?, &format!("delete key {id}"), |c, base| {
                c.delete(format!("{base}/-/admin/keys/{id}"))
            })
            .await?;
            writeln!(out, "access key {id} deleted")?;
        }
    }
    std::io::stdout().write_all(&out)?;
    Ok(())
}

/// Runs a `hoard bucket` subcommand.
pub async fn bucket(args: BucketCmd) -> anyhow::Result<()> {
    let mut out = Vec::new();
    match args.action {
        BucketAction::List { json, conn } => {
            let list = call(&conn.client()?, "list buckets", |c, base| {
                c.get(format!("{base}/-/admin/buckets"))
            })
            .await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            }
            for b in list.as_array().into_iter().flatten().filter(|_| !json) {
                writeln!(
                    out,
                    "{}  owner {}  {} objects, {} bytes  quota {}  grants {}",
                    b["name"].as_str().unwrap_or("?"),
                    b["owner"].as_str().unwrap_or("?"),
                    b["usage"]["objects"],
                    b["usage"]["bytes"],
                    b["quota"],
                    b["grants"]
                )?;
            }
        }
        BucketAction::Allow {
            which,
            bucket,
            key,
            conn,
        } => {
            grant(&conn, &bucket, &key, which.name(), true).await?;
            writeln!(out, "{key} may now {} on {bucket}", which.name())?;
        }
        BucketAction::Deny {
            which,
            bucket,
            key,
            conn,
        } => {
            grant(&conn, &bucket, &key, which.name(), false).await?;
            writeln!(out, "{key} no longer holds {} on {bucket}", which.name())?;
        }
        BucketAction::Quota {
            bucket,
            max_bytes,
            max_objects,
            conn,
        } => {
            let body = serde_json::json!({ "max_bytes": max_bytes, "max_objects": max_objects });
            call(&conn.client()?, &format!("quota of {bucket}"), |c, base| {
                c.put(format!("{base}/-/admin/buckets/{bucket}/quota"))
                    .json(&body)
            })
            .await?;
            writeln!(out, "quota of {bucket} set")?;
        }
    }
    std::io::stdout().write_all(&out)?;
    Ok(())
}

async fn grant(
    conn: &Conn,
    bucket: &str,
    key: &str,
    grant: &str,
    allow: bool,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "key": key, "grant": grant, "allow": allow });
    call(&conn.client()?, &format!("grant on {bucket}"), |c, base| {
        c.post(format!("{base}/-/admin/buckets/{bucket}/grants"))
            .json(&body)
    })
    .await?;
    Ok(())
}
