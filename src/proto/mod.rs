//! minivault's binary protocol over TCP (`--tcp-port`), a front-end on the store core.
//!
//! * [`frame`] — the wire format: request headers parsed from a buffer, responses.
//! * [`server`] — the listener and connections: pipelined requests, AUTH first when
//!   authentication is on, idle timeout, connection cap, key and value limits.
//! * `value` — a SET's value streamed from the socket (through zstd when compressed)
//!   into [`crate::store::Store::put_with`].
//! * [`client`] — a Rust client (used by `hoard bench proto` and the tests).
//!
//! A key `k` on this protocol is the hoard key `/k` (what `GET /k` serves over HTTP).
//! SET overwrites (`PutOptions { replace: true }`), GET streams the value through the
//! index server ([`crate::store::Store::open`]), DELETE is [`crate::store::Store::delete`].
//! Nothing here writes on its own: every write is the store core's.

pub mod client;
mod conn;
pub mod frame;
pub mod server;
mod value;

pub use server::{start, Running};

use std::time::Duration;

/// `--tcp-*` flags of `hoard server` and `hoard dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProtoArgs {
    /// Serve minivault's binary protocol on this TCP port (`hoard server`: off by
    /// default; `hoard dev`: --port + 5, 0 switches it off).
    #[arg(long, env = "HOARD_TCP_PORT")]
    pub tcp_port: Option<u16>,
    /// Largest value a binary-protocol SET may store, in bytes (on the wire and after
    /// zstd decompression); larger SETs are refused and their bytes skipped.
    #[arg(long, env = "HOARD_TCP_MAX_VALUE", default_value_t = 1 << 30)]
    pub tcp_max_value: u64,
    /// Close a binary-protocol connection that sends nothing (or does not read its
    /// answers) for this long.
    #[arg(long, env = "HOARD_TCP_IDLE_TIMEOUT", default_value = "60s", value_parser = crate::units::parse_duration)]
    pub tcp_idle_timeout: Duration,
    /// Most binary-protocol connections served at once; more wait in the kernel's
    /// accept queue.
    #[arg(long, env = "HOARD_TCP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub tcp_max_connections: usize,
}

impl Default for ProtoArgs {
    fn default() -> Self {
        ProtoArgs {
            tcp_port: None,
            tcp_max_value: 1 << 30,
            tcp_idle_timeout: Duration::from_secs(60),
            tcp_max_connections: 1024,
        }
    }
}

/// Why a connection ended abnormally (each one is closed after such an error).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing arrived (or could be sent) within the idle timeout.
    #[error("idle for {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The frame cannot be delimited (unknown op), or a value being sent failed midway.
    #[error("{0}")]
    Fatal(String),
    /// The server answered with an error (client side); the connection is still usable
    /// unless the server closed it.
    #[error("{0}")]
    Server(String),
    /// A response from the server did not follow the protocol (client side).
    #[error("bad response: {0}")]
    BadResponse(String),
}

/// The hoard key a binary-protocol key names: `/` followed by the key's bytes.
pub fn hoard_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'/');
    k.extend_from_slice(key);
    k
}
