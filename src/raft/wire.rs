//! The binary body of AppendEntries, the one Raft RPC on every write: postcard
//! (compact, no field names, byte strings as bytes) after a 4-byte version tag, instead
//! of JSON. The receiver tells the two apart by the tag (JSON never starts with it), so
//! a member still sending JSON is understood; a sender whose binary body is refused
//! (`400`, a member of an earlier version) sends JSON to that member from then on.

use openraft::raft::AppendEntriesRequest;

use super::TypeConfig;

/// Starts every binary AppendEntries body: format and version.
pub const TAG: &[u8; 4] = b"HRB1";

/// Encodes `req` as a binary body.
pub fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<Vec<u8>, String> {
    postcard::to_extend(req, TAG.to_vec()).map_err(|e| format!("encoding AppendEntries: {e}"))
}

/// Decodes an AppendEntries body, binary or JSON.
pub fn decode_append(body: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, String> {
    match body.strip_prefix(TAG) {
        Some(rest) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        None => serde_json::from_slice(body).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{blank_ent, log_id, membership_ent};
    use openraft::{Entry, EntryPayload, Vote};

    use super::*;
    use crate::index::Command;
    use crate::raft::Proposal;

    fn normal(index: u64, proposal: Proposal) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(2, 1, index),
            payload: EntryPayload::Normal(proposal),
        }
    }

    fn unlink(key: &str) -> Command {
        Command::Unlink {
            key: key.as_bytes().to_vec(),
            now_ms: 7,
        }
    }

    fn request() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 1, 4)),
            leader_commit: Some(log_id(1, 1, 3)),
            entries: vec![
                blank_ent(2, 1, 5),
                membership_ent(2, 1, 6, vec![[1, 2, 3].into()]),
                normal(7, Proposal::One(unlink("/a"))),
                normal(8, Proposal::Many(vec![unlink("/b"), unlink("/c")])),
            ],
        }
    }

    #[test]
    fn binary_and_json_bodies_decode_to_the_same_request() {
        let req = request();
        let binary = encode_append(&req).unwrap();
        assert!(binary.starts_with(TAG));
        let json = serde_json::to_vec(&req).unwrap();
        assert!(
            binary.len() < json.len() / 2,
            "{} vs {}",
            binary.len(),
            json.len()
        );
        // Debug output shows every field (the types implement no PartialEq).
        let want = format!("{req:?}");
        assert_eq!(format!("{:?}", decode_append(&binary).unwrap()), want);
        assert_eq!(format!("{:?}", decode_append(&json).unwrap()), want);
    }

    #[test]
    fn a_damaged_body_is_an_error() {
        let binary = encode_append(&request()).unwrap();
        assert!(decode_append(&binary[..binary.len() - 3]).is_err());
        assert!(decode_append(b"HRB1").is_err());
        assert!(decode_append(b"{}").is_err());
    }
}
