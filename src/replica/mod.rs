//! Talking to volume servers: the one client, the streaming fan-out of a write to all
//! replicas, and the background health prober. Shared by the index server and the
//! background workers (rebuild, rebalance, verify).

pub mod client;
pub mod fanout;
pub mod health;

pub use client::{ClientOptions, VolumeClient, VolumeError};
pub use fanout::{put_all, put_quorum, FanoutError, QuorumUpload, Uploaded};
pub use health::Health;
