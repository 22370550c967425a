//! Byte strings as base64 text in serde formats (`#[serde(with = …)]`).
//!
//! Commands travel through the Raft log, and records in its answers, as JSON, where a
//! plain `Vec<u8>` becomes an array of numbers — up to 4 bytes of JSON per byte. For a
//! value stored in its record (`--inline-max`, up to 64 KiB) that would make one log
//! entry ~256 KiB, and a batch of entries could exceed the Raft endpoint's body limit;
//! as base64 it is 4/3 of the value.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serializer};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `Vec<u8>` as a base64 string.
pub mod bytes {
    use super::*;

    /// Writes `v` as base64.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}

/// `Option<Vec<u8>>` as a base64 string or null.
pub mod option {
    use super::*;

    /// Writes `v` as base64, or null.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&B64.encode(b)),
            None => s.serialize_none(),
        }
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| B64.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::index::{Command, Record, State};

    #[test]
    fn inline_values_are_base64_in_json() {
        let cmd = Command::PutInline {
            key: b"/k".to_vec(),
            value: vec![0, 1, 255],
            md5: None,
            now_ms: 1,
            owner: 0,
            replace: false,
            meta: Vec::new(),
        };
        let json = serde_json::to_string(&cmd).unwrap();
        assert!(json.contains(r#""value":"AAH/""#), "{json}");
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
        let mut r = Record {
            state: State::Live,
            volumes: Vec::new(),
            size: 3,
            md5: None,
            changed_ms: 1,
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
            meta: Vec::new(),
            inline: Some(vec![0, 1, 255]),
            gen: 0,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""inline":"AAH/""#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        r.inline = None;
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        // A record serialised before the field existed.
        let old = json.replace(r#","inline":null"#, "");
        assert!(!old.contains("inline"));
        assert_eq!(serde_json::from_str::<Record>(&old).unwrap(), r);
    }
}
