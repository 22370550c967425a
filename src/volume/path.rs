//! Turning a raw request path into a location that is safe to join under the volume
//! root. Pure: no file system access.
//!
//! Rules, applied to the path as received (still percent-encoded):
//!
//! 1. It must start with `/`.
//! 2. It is percent-decoded (`%2F` becomes a real `/`, `+` stays `+`); a malformed escape
//!    or a result that is not UTF-8 is refused.
//! 3. The decoded path is split on `/`. Empty segments are dropped, which merges
//!    repeated slashes like nginx's `merge_slashes on`. A trailing `/` marks a
//!    directory.
//! 4. Any segment starting with `.` is refused: that covers `.` and `..` (no traversal)
//!    and hidden names such as the server's temp directory. Backslashes and NUL bytes
//!    are refused anywhere.

use std::path::PathBuf;

/// Why a request path was refused. Every variant answers 400 Bad Request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent escape")]
    BadEscape,
    /// The decoded bytes are not UTF-8.
    #[error("path is not valid UTF-8 once decoded")]
    NotUtf8,
    /// A NUL byte (usually `%00`).
    #[error("path contains a NUL byte")]
    Nul,
    /// A backslash, which some systems treat as a separator.
    #[error("path contains a backslash")]
    Backslash,
    /// A segment starting with `.`: `.`, `..`, or a hidden name.
    #[error("path segment {0:?} starts with '.'")]
    DotSegment(String),
}

/// A validated request path: a list of plain names, none of which can leave the
/// directory it is joined to, plus whether the request named a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    segments: Vec<String>,
    trailing_slash: bool,
}

impl VolumePath {
    /// Validates `raw`, the percent-encoded path of a request URI (without the query).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let decoded = percent_decode(raw.as_bytes())?;
        let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
        if decoded.contains('\0') {
            return Err(PathError::Nul);
        }
        if decoded.contains('\\') {
            return Err(PathError::Backslash);
        }
        let mut segments = Vec::new();
        for segment in decoded.split('/').filter(|s| !s.is_empty()) {
            if segment.starts_with('.') {
                return Err(PathError::DotSegment(segment.to_owned()));
            }
            segments.push(segment.to_owned());
        }
        Ok(Self {
            segments,
            trailing_slash: decoded.ends_with('/'),
        })
    }

    /// The names, outermost first; empty for the root.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// True when the request path ended with `/` (it names a directory). The root
    /// `/` always does.
    pub fn names_dir(&self) -> bool {
        self.trailing_slash
    }

    /// The parent segments and the final name, or `None` for the root.
    pub fn split_last(&self) -> Option<(&[String], &str)> {
        self.segments
            .split_last()
            .map(|(last, parents)| (parents, last.as_str()))
    }

    /// The segments joined into a relative path (empty for the root).
    pub fn relative(&self) -> PathBuf {
        self.segments.iter().collect()
    }
}

/// Decodes `%XX` escapes (the same decoder as index keys, `crate::key`), refusing a
/// `%` not followed by two hex digits, which the index would keep as is.
fn percent_decode(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let hex = |i: usize| input.get(i).is_some_and(u8::is_ascii_hexdigit);
    let malformed = input
        .iter()
        .enumerate()
        .any(|(i, &c)| c == b'%' && !(hex(i + 1) && hex(i + 2)));
    if malformed {
        return Err(PathError::BadEscape);
    }
    Ok(percent_encoding::percent_decode(input).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The segments joined with `|`, and whether the path names a directory.
    fn ok(raw: &str) -> (String, bool) {
        let p = VolumePath::parse(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"));
        (p.segments().join("|"), p.names_dir())
    }

    #[test]
    fn accepts_plain_paths() {
        assert_eq!(ok("/"), ("".into(), true));
        assert_eq!(ok("/a"), ("a".into(), false));
        assert_eq!(ok("/a/"), ("a".into(), true));
        assert_eq!(ok("/ab/cd/L2Eb+/x=="), ("ab|cd|L2Eb+|x==".into(), false));
        assert_eq!(ok("/a.b/c..d/e."), ("a.b|c..d|e.".into(), false));
    }

    #[test]
    fn decodes_and_merges_slashes() {
        assert_eq!(ok("/a%2Fb"), ("a|b".into(), false));
        assert_eq!(ok("/a%2fb%2F"), ("a|b".into(), true));
        assert_eq!(ok("//a///b"), ("a|b".into(), false));
        assert_eq!(ok("/a%20b%2B"), ("a b+".into(), false));
        assert_eq!(ok("/%C3%A9t%C3%A9"), ("été".into(), false));
        assert_eq!(ok("/a+b"), ("a+b".into(), false));
    }

    #[test]
    fn refuses_traversal_and_hidden_names() {
        let dot = |s: &str| Err(PathError::DotSegment(s.into()));
        assert_eq!(VolumePath::parse("/../etc/passwd"), dot(".."));
        assert_eq!(VolumePath::parse("/a/../b"), dot(".."));
        assert_eq!(VolumePath::parse("/a/.."), dot(".."));
        assert_eq!(VolumePath::parse("/./a"), dot("."));
        assert_eq!(VolumePath::parse("/%2e%2e/x"), dot(".."));
        assert_eq!(VolumePath::parse("/%2E%2E/x"), dot(".."));
        assert_eq!(VolumePath::parse("/a/..%2Fb"), dot(".."));
        assert_eq!(VolumePath::parse("/a%2F..%2F..%2Fb"), dot(".."));
        assert_eq!(VolumePath::parse("/.hoard-tmp/x"), dot(".hoard-tmp"));
        assert_eq!(VolumePath::parse("/a/.hidden"), dot(".hidden"));
        assert_eq!(VolumePath::parse("/%2ehidden"), dot(".hidden"));
    }

    #[test]
    fn refuses_bad_bytes() {
        use PathError::*;
        assert_eq!(VolumePath::parse("a/b"), Err(NotAbsolute));
        assert_eq!(VolumePath::parse(""), Err(NotAbsolute));
        assert_eq!(VolumePath::parse("/a\\b"), Err(Backslash));
        assert_eq!(VolumePath::parse("/a%5Cb"), Err(Backslash));
        assert_eq!(VolumePath::parse("/..%5C..%5Cwin.ini"), Err(Backslash));
        assert_eq!(VolumePath::parse("/a%00b"), Err(Nul));
        assert_eq!(VolumePath::parse("/a%ff"), Err(NotUtf8));
        assert_eq!(VolumePath::parse("/a%c3"), Err(NotUtf8));
        assert_eq!(VolumePath::parse("/a%"), Err(BadEscape));
        assert_eq!(VolumePath::parse("/a%2"), Err(BadEscape));
        assert_eq!(VolumePath::parse("/a%zz"), Err(BadEscape));
        assert_eq!(VolumePath::parse("/a%%32%65"), Err(BadEscape));
    }

    #[test]
    fn split_and_join() {
        let p = VolumePath::parse("/ab/cd/x").unwrap();
        let (parents, last) = p.split_last().unwrap();
        assert_eq!(parents, ["ab", "cd"]);
        assert_eq!(last, "x");
        assert_eq!(p.relative(), PathBuf::from("ab/cd/x"));
        let root = VolumePath::parse("/").unwrap();
        assert_eq!(root.split_last(), None);
        assert_eq!(root.relative(), PathBuf::new());
    }
}
