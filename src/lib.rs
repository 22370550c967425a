//! hoard: a distributed blob / key-value store, drop-in compatible with minikeyvalue.
//!
//! Layers, bottom up:
//!
//! * [`placement`] — which volumes hold a key and where its file lives (pure).
//! * [`key`] — turning a request path into a key, and what keys are allowed (pure).
//! * [`index`] — the embedded `key → record` store; every mutation is one command.
//! * [`volume`] — the native volume server: plain files, atomic writes.
//! * [`replica`] — talking to volume servers: client, streaming fan-out, health.
//! * [`server`] — the index server's HTTP API.
//! * [`ops`] — rebuild, rebalance, verify/repair and orphan collection; background jobs.
//! * [`dev`] — `hoard dev`: index server and three volumes in one process.
//! * [`telemetry`] — metrics and logging set-up.
//! * [`config`] — the optional TOML file behind `--config`.
//! * [`bench`] — `hoard bench`: load generators that drive a running store.
//! * [`store`] — the store core every front-end calls: writes, deletes, reads, listings.
//! * [`sites`] — asynchronous replication to other stores: shipper and receiver.
//! * [`client`] — `hoard put|get|rm|unlink|ls|stat|cp`: the HTTP client side.
//! * [`jsonapi`] — minivault's JSON interface (`--json-port`), a front-end on the store.
//! * [`proto`] — minivault's binary protocol (`--tcp-port`), a front-end on the store.
//! * [`cli`] — command-line parsing and dispatch, the top of the module tree (nothing
//!   imports it); `main.rs` is a thin shell over it. Each role's options live with the
//!   role (`server::ServerArgs`, `volume::VolumeArgs`, `dev::DevArgs`, `ops::args`).
//! * [`units`] — parsing durations.
//! * [`net`], [`tls`], [`auth`], [`ratelimit`] — serving connections safely: timeouts,
//!   limits, TLS, shared-secret authentication and signed URLs, rate limiting.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod dev;
pub mod http;
pub mod index;
pub mod jsonapi;
pub mod key;
pub mod net;
pub mod ops;
pub mod placement;
pub mod proto;
pub mod raft;
pub mod ratelimit;
pub mod replica;
pub mod s3;
pub mod server;
pub mod sites;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod volume;
