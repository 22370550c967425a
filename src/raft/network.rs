//! Raft RPCs between index servers: HTTP on each server's own port, under `/-/raft/…`
//! (served by [`super::api`]); JSON bodies, AppendEntries in postcard ([`super::wire`]). The same client also forwards commands and
//! read-index requests to the leader.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::TypeConfig;

/// HTTP(S) client for peers, with the cluster token when auth is on.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    token: Option<reqwest::header::HeaderValue>,
    scheme: &'static str,
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached: no connection was made, so nothing was sent.
    #[error("peer unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// No answer in time: the request may have been sent and acted upon.
    #[error("peer did not answer in time: {0}")]
    Timeout(reqwest::Error),
    /// The request or its answer broke.
    #[error("peer call failed: {0}")]
    Network(String),
    /// The peer could not read the request (`400`).
    #[error("peer refused the request: {0}")]
    Refused(String),
    /// Another node answers at the peer's address (`421`): a replacement for a dead
    /// member, at its address, while the dead id is still a member. Nothing was done.
    #[error("{0}")]
    Misdirected(String),
}

/// The header naming the node a Raft RPC (`append`, `vote`, `snapshot`) is for: a
/// node answers `421 Misdirected Request` to RPCs for another id, so that a new node
/// at a dead member's address is not taken for it (its empty log for the dead
/// member's, its vote for the dead member's vote).
pub const RAFT_TO_HEADER: &str = "x-hoard-raft-to";

impl PeerClient {
    /// A client whose connections time out after `connect`; over HTTPS when `https`,
    /// trusting only `ca` when it is not empty.
    pub fn new(
        connect: Duration,
        token: Option<String>,
        https: bool,
        ca: Vec<reqwest::Certificate>,
    ) -> anyhow::Result<Self> {
        let token = match token {
            Some(t) => Some(crate::http::bearer(&t)?),
            None => None,
        };
        Ok(PeerClient {
            http: crate::http::internal_client(connect, ca)?,
            token,
            scheme: if https { "https" } else { "http" },
        })
    }

    /// A POST of `path_and_query` on the member at `addr`, with the cluster token and
    /// the current trace context.
    pub fn post(&self, addr: &str, path_and_query: &str) -> reqwest::RequestBuilder {
        let builder = crate::otel::inject(
            self.http
                .post(format!("{}://{addr}{path_and_query}", self.scheme)),
        );
        match &self.token {
            Some(t) => builder.header(reqwest::header::AUTHORIZATION, t.clone()),
            None => builder,
        }
    }

    /// POSTs `req` as JSON to `/-/raft/{path}` on `addr` and decodes the answer.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: serde::Serialize + ?Sized,
        Resp: serde::de::DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| CallError::Network(e.to_string()))?;
        self.call_with(addr, path, body, "application/json", timeout)
            .await
    }

    /// POSTs `body` (of `content_type`) to `/-/raft/{path}` on `addr` and decodes the
    /// JSON answer.
    pub async fn call_with<Resp>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &'static str,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Resp: serde::de::DeserializeOwned,
    {
        self.call_to(None, addr, path, body, content_type, timeout)
            .await
    }

    /// [`PeerClient::call_with`], for node `to` when given ([`RAFT_TO_HEADER`]).
    pub async fn call_to<Resp>(
        &self,
        to: Option<u64>,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &'static str,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Resp: serde::de::DeserializeOwned,
    {
        let mut builder = self
            .post(addr, &format!("/-/raft/{path}"))
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(to) = to {
            builder = builder.header(RAFT_TO_HEADER, to);
        }
        let resp = builder.send().await.map_err(|e| {
            // A connect error (refused, or the connect timed out) sent nothing; any
            // other timeout may come after the request reached the peer.
            if e.is_connect() {
                CallError::Unreachable(e)
            } else if e.is_timeout() {
                CallError::Timeout(e)
            } else {
                CallError::Network(e.to_string())
            }
        })?;
        if resp.status() == reqwest::StatusCode::BAD_REQUEST {
            return Err(CallError::Refused(format!("{addr} answered 400")));
        }
        if resp.status() == reqwest::StatusCode::MISDIRECTED_REQUEST {
            let why = resp.text().await.unwrap_or_default();
            return Err(CallError::Misdirected(format!(
                "{addr}: {}",
                why.trim_end()
            )));
        }
        if !resp.status().is_success() {
            return Err(CallError::Network(format!(
                "{addr} answered {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map_err(|e| CallError::Network(format!("{addr}: {e}")))
    }
}

/// Builds a [`Peer`] per target node.
#[derive(Clone)]
pub struct Network {
    /// The client for every peer.
    pub client: PeerClient,
    /// This node's own addresses of peers (`--peers`), used before the membership's.
    pub peers: std::collections::BTreeMap<u64, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            json_only: false,
            target,
            addr: self
                .peers
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    client: PeerClient,
    /// The peer refused a binary AppendEntries (an earlier version): send it JSON.
    json_only: bool,
    target: u64,
    addr: String,
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let body = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let answer = self
            .client
            .call_to(
                Some(self.target),
                &self.addr,
                path,
                body,
                "application/json",
                option.hard_ttl(),
            )
            .await;
        self.answer(answer)
    }

    /// openraft's view of a call's outcome (its error type is openraft's, large).
    #[allow(clippy::result_large_err)]
    fn answer<Resp, E>(
        &self,
        answer: Result<Result<Resp, E>, CallError>,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        E: std::error::Error,
    {
        let answer = answer.map_err(|e| match e {
            CallError::Unreachable(e) | CallError::Timeout(e) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            // Not the node: as good as unreachable (openraft backs off).
            CallError::Misdirected(msg) => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg)))
            }
            CallError::Network(msg) | CallError::Refused(msg) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
            }
        })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        if !self.json_only {
            let body = super::wire::encode_append(&rpc)
                .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
            let answer = self
                .client
                .call_to(
                    Some(self.target),
                    &self.addr,
                    "append",
                    body,
                    "application/octet-stream",
                    option.hard_ttl(),
                )
                .await;
            if !matches!(answer, Err(CallError::Refused(_))) {
                return self.answer(answer);
            }
            tracing::info!(
                "node {} does not read binary AppendEntries: sending it JSON",
                self.target
            );
            self.json_only = true;
        }
        self.rpc("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc("vote", &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use openraft::testing::log_id;
    use openraft::Vote;

    use super::*;

    /// A member of an earlier version: JSON only, `400` for anything else.
    async fn json_only_member(binary_seen: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/-/raft/append",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                use axum::response::IntoResponse;
                match serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(&body) {
                    Ok(_) => axum::Json(Ok::<_, RaftError<u64>>(
                        AppendEntriesResponse::<u64>::Success,
                    ))
                    .into_response(),
                    Err(_) => {
                        binary_seen.fetch_add(1, Ordering::SeqCst);
                        axum::http::StatusCode::BAD_REQUEST.into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn a_member_refusing_binary_append_entries_gets_json() {
        let binary_seen = Arc::new(AtomicUsize::new(0));
        let addr = json_only_member(Arc::clone(&binary_seen)).await;
        let client = PeerClient::new(Duration::from_secs(1), None, false, Vec::new()).unwrap();
        let mut network = Network {
            client,
            peers: [(2, addr.clone())].into(),
        };
        let mut peer = network.new_client(2, &BasicNode { addr }).await;
        let req = || AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(1, 1, 1)),
            leader_commit: None,
            entries: Vec::new(),
        };
        let option = RPCOption::new(Duration::from_secs(5));
        for _ in 0..2 {
            let answer = peer.append_entries(req(), option.clone()).await;
            assert!(
                matches!(answer, Ok(AppendEntriesResponse::Success)),
                "{answer:?}"
            );
        }
        // Binary once; JSON from then on.
        assert_eq!(binary_seen.load(Ordering::SeqCst), 1);
    }
}
