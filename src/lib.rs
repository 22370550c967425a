//! hoard: a distributed blob / key-value store, drop-in compatible with minikeyvalue.
//!
//! Layers, bottom up (each calls only those below it; `tests/layers.rs` checks the
//! arrows, and docs/ARCHITECTURE.md has the picture and a "where to change what"):
//!
//! * Ground: [`placement`] (which volumes hold a key, pure), [`key`] (request path →
//!   key), [`clock`], [`hex`], [`units`], [`progress`]; [`http`], [`net`], [`tls`],
//!   [`auth`], [`ratelimit`] (serving and calling HTTP safely: timeouts, limits, TLS,
//!   shared-secret authentication, signed URLs, the one client builder for hoard's own
//!   servers); [`telemetry`], [`config`].
//! * [`volume`] — the native volume server: plain files, atomic writes, and its wire
//!   contract (disk space, headers, md5-checked streams).
//! * [`index`] — the embedded `key → record` store; every mutation is one command;
//!   [`raft`] replicates it.
//! * [`replica`] — talking to volume servers: client, streaming fan-out, health.
//! * [`store`] — the store core every front-end calls: writes, deletes, reads (with
//!   their read barrier), listings, the upkeep queue. Imports nothing above it.
//! * [`ops`] — rebuild, rebalance, verify/repair, orphan collection, scrub, the upkeep
//!   worker; background jobs. Takes a [`store::Ctx`].
//! * Front-ends on the store: [`server`] (the minikeyvalue HTTP API), [`s3`],
//!   [`proto`] (binary protocol), [`jsonapi`], [`sites`] (replication to other stores).
//! * Top: [`dev`] (`hoard dev`), [`client`] (the CLI client), [`bench`] (load
//!   generators), [`cli`] — command-line parsing and dispatch, which nothing imports;
//!   `main.rs` is a thin shell over it. Each role's options live with the role
//!   (`server::ServerArgs`, `volume::VolumeArgs`, `dev::DevArgs`, `ops::args`).

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod dev;
pub mod hex;
pub mod http;
pub mod index;
pub mod jsonapi;
pub mod key;
pub mod net;
pub mod ops;
pub mod otel;
pub mod placement;
pub mod progress;
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
