//! Shared helpers for integration tests: free ports, waiting for servers, processes.
pub mod cluster;
