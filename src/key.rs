//! Keys: the full request path, percent-decoded, including the leading `/`.
//!
//! As in minikeyvalue, `%2F` decodes to `/`, so `/a%2Fb` and `/a/b` name the same key.
//! hoard additionally refuses keys that cannot be stored safely or listed as JSON.

use crate::placement::key_path;
use percent_encoding::{percent_decode_str, AsciiSet, CONTROLS};

/// Longest key accepted, in bytes after decoding.
pub const MAX_KEY_LEN: usize = 1024;

/// Paths under this prefix are the server's own endpoints, never keys.
pub const RESERVED_PREFIX: &str = "/-/";

/// Why a request path is not an acceptable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The decoded key is not valid UTF-8.
    #[error("key is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// The key contains a NUL byte or another control character.
    #[error("key contains a control character")]
    ControlChar,
    /// A `.` or `..` path segment (after decoding).
    #[error("key contains a '.' or '..' segment")]
    DotSegment,
    /// Longer than [`MAX_KEY_LEN`], or its file name would exceed 255 bytes.
    #[error("key is too long (at most {MAX_KEY_LEN} bytes, and its base64 file name segments at most 255)")]
    TooLong,
    /// The path does not start with `/`.
    #[error("key must start with '/'")]
    NoLeadingSlash,
    /// `/` alone, or a path under `/-/`, cannot be written.
    #[error("'/' and paths under /-/ are reserved and cannot be written")]
    Reserved,
}

/// Characters escaped when a key or file name is put into a URL path: everything a URL
/// parser would reinterpret (`?`, `#`, `%`, `\`, `;`, …), controls and spaces; `/`
/// stays. Decoding (`parse`) gives the same bytes back.
pub const URL_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b';');

/// Decodes a raw (still percent-encoded) request path into a key.
pub fn parse(raw_path: &str) -> Result<Vec<u8>, KeyError> {
    if !raw_path.starts_with('/') {
        return Err(KeyError::NoLeadingSlash);
    }
    let key: Vec<u8> = percent_decode_str(raw_path).collect();
    check(&key)?;
    Ok(key)
}

/// Checks a key given as it is (already decoded: the batch API, listings): the rules
/// [`parse`] applies after percent-decoding.
pub fn check(key: &[u8]) -> Result<(), KeyError> {
    if !key.starts_with(b"/") {
        return Err(KeyError::NoLeadingSlash);
    }
    let text = std::str::from_utf8(key).map_err(|_| KeyError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(KeyError::ControlChar);
    }
    if text.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(KeyError::DotSegment);
    }
    // base64 of up to 189 bytes is at most 252 characters, so only longer keys can
    // produce a file-name segment over 255 bytes; skip the hashing for the rest.
    let long = key.len() > 189 && key_path(key).split('/').any(|seg| seg.len() > 255);
    if key.len() > MAX_KEY_LEN || long {
        return Err(KeyError::TooLong);
    }
    Ok(())
}

/// Checks that `key` may be written (PUT, DELETE, UNLINK).
pub fn check_writable(key: &[u8]) -> Result<(), KeyError> {
    if key == b"/" || key.starts_with(RESERVED_PREFIX.as_bytes()) {
        return Err(KeyError::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_minikeyvalue() {
        assert_eq!(parse("/hello").unwrap(), b"/hello");
        assert_eq!(parse("/a/b%20c").unwrap(), b"/a/b c");
        assert_eq!(parse("/a%2Fb").unwrap(), b"/a/b");
        assert_eq!(parse("/%C3%BCn%C3%AF").unwrap(), "/ünï".as_bytes());
        assert_eq!(parse("/???>>>").unwrap(), b"/???>>>");
        assert_eq!(parse("/a+b").unwrap(), b"/a+b"); // '+' is literal in paths
        assert_eq!(parse("/.hidden/x..y").unwrap(), b"/.hidden/x..y");
    }

    #[test]
    fn rejects_unsafe_keys() {
        assert_eq!(parse("/%FF"), Err(KeyError::NotUtf8));
        assert_eq!(parse("/a%00b"), Err(KeyError::ControlChar));
        assert_eq!(parse("/a%0Ab"), Err(KeyError::ControlChar));
        assert_eq!(parse("/../etc/passwd"), Err(KeyError::DotSegment));
        assert_eq!(parse("/a/%2e%2e/b"), Err(KeyError::DotSegment));
        assert_eq!(parse("/a/./b"), Err(KeyError::DotSegment));
        assert_eq!(parse("/a%2F..%2Fb"), Err(KeyError::DotSegment));
        assert_eq!(parse("relative"), Err(KeyError::NoLeadingSlash));
        assert_eq!(
            parse(&format!("/{}", "k".repeat(MAX_KEY_LEN))),
            Err(KeyError::TooLong)
        );
        // 200 bytes without '/' in its base64 would make a 268-byte file name.
        assert_eq!(
            parse(&format!("/{}", "k".repeat(199))),
            Err(KeyError::TooLong)
        );
        assert!(parse(&format!("/{}", "k".repeat(150))).is_ok());
    }

    #[test]
    fn reserved_keys() {
        assert_eq!(check_writable(b"/"), Err(KeyError::Reserved));
        assert_eq!(check_writable(b"/-/health"), Err(KeyError::Reserved));
        assert_eq!(check_writable(b"/-x"), Ok(()));
    }
}
