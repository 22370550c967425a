//! Talking to volume servers: the one client, the streaming fan-out of a write to all
//! replicas, and the background health prober. Shared by the index server and the
//! background workers (rebuild, rebalance, verify).

pub mod body;
pub mod client;
pub mod delete;
pub mod fanout;
pub mod hash;
pub mod health;

pub use client::{ClientOptions, VolumeClient, VolumeError};
pub use delete::{delete_files, DeleteError};
pub use fanout::{put_quorum, FanoutError, QuorumUpload, Uploaded, WriteFailed};
pub use hash::{hash, HashError};
pub use health::Health;
