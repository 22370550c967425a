//! Talking to volume servers.
