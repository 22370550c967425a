//! Translating the store core's errors, keys and bucket names into S3 terms.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use s3s::{s3_error, S3Error, S3ErrorCode};

use crate::key::KeyError;
use crate::store::StoreError;

/// The S3 error for a failed store operation. Absence maps to `NoSuchKey`; callers
/// name other absences (`NoSuchUpload`, …) themselves.
pub fn store_error(e: StoreError) -> S3Error {
    match e {
        StoreError::Key(k) => key_error(k),
        StoreError::Invalid(m) => s3_error!(InvalidArgument, "{m}"),
        StoreError::NotFound => s3_error!(NoSuchKey),
        StoreError::Exists => s3_error!(PreconditionFailed, "the object exists"),
        StoreError::Protected => s3_error!(
            AccessDenied,
            "the server runs with --protect: UNLINK the key through the native API first"
        ),
        StoreError::Conflict => s3_error!(
            OperationAborted,
            "another write of this key is in progress; retry"
        ),
        // Only replication's writes carry a version that can lose.
        StoreError::Superseded => s3_error!(OperationAborted, "superseded by a newer version"),
        // S3 writes allow empty values: only a refusal elsewhere can end here.
        StoreError::Empty => s3_error!(InvalidArgument, "empty value refused"),
        StoreError::ClientBody(f) => s3_error!(IncompleteBody, "{f}"),
        StoreError::Index(i) => s3_error!(ServiceUnavailable, "{i}"),
        StoreError::Volume(m) => S3Error::with_message(S3ErrorCode::InternalError, m),
        StoreError::Unavailable(m) => s3_error!(ServiceUnavailable, "{m}"),
        StoreError::Forbidden(m) => s3_error!(AccessDenied, "{m}"),
        StoreError::QuotaExceeded(m) => quota_exceeded(&m),
    }
}

/// `QuotaExceeded` (403), as Ceph RGW answers a write beyond a bucket quota (S3 itself
/// has no bucket quotas; MinIO answers 400 `XMinioAdminBucketQuotaExceeded`, Garage
/// 403 `AccessDenied`): a 4xx no client retries.
pub fn quota_exceeded(message: &str) -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("QuotaExceeded".into()),
        format!("quota exceeded: {message}"),
    );
    e.set_status_code(StatusCode::FORBIDDEN);
    e
}

/// The S3 error for a failed write: [`store_error`], except that an aws-chunked body
/// whose chunk signature does not match (s3s ends the body stream with its
/// `AwsChunkedStreamError::SignatureMismatch`, seen here only as text) is
/// `SignatureDoesNotMatch` (403), as S3 answers, rather than a bad body.
pub fn write_error(e: StoreError) -> S3Error {
    let text = e.to_string();
    if matches!(e, StoreError::Invalid(_) | StoreError::ClientBody(_))
        && text.contains("AwsChunkedStreamError: SignatureMismatch")
    {
        return s3_error!(
            SignatureDoesNotMatch,
            "a chunk signature of the aws-chunked body does not match"
        );
    }
    store_error(e)
}

/// The S3 error for a key hoard cannot store.
pub fn key_error(e: KeyError) -> S3Error {
    match e {
        KeyError::TooLong => s3_error!(KeyTooLongError, "{e}"),
        other => s3_error!(InvalidArgument, "unsupported object key: {other}"),
    }
}

/// The hoard key of object `key` in `bucket`: `/bucket/key`, checked.
pub fn object_key(bucket: &str, key: &str) -> Result<Vec<u8>, S3Error> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "empty object key"));
    }
    let full = format!("/{bucket}/{key}").into_bytes();
    crate::key::check(&full).map_err(key_error)?;
    Ok(full)
}

/// The key prefix of `bucket`: `/bucket/`.
pub fn bucket_prefix(bucket: &str) -> Vec<u8> {
    format!("/{bucket}/").into_bytes()
}

/// Checks a bucket name for creation: S3's rules (3–63 characters of lower-case
/// letters, digits, `.` and `-`, starting and ending with a letter or digit, no `..`,
/// not an IP address).
pub fn check_bucket_name(name: &str) -> Result<(), S3Error> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let edges = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid = (3..=63).contains(&name.len())
        && ok_chars
        && edges(name.bytes().next())
        && edges(name.bytes().last())
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err();
    if valid {
        Ok(())
    } else {
        Err(s3_error!(InvalidBucketName, "invalid bucket name: {name}"))
    }
}

/// The ETag of a value: a stored one (multipart), else its md5, else (md5 unknown: a
/// value written natively with `--md5sum=false`) one derived from size and time.
pub fn etag(record: &crate::index::Record, meta: &crate::store::ObjectMeta) -> String {
    if let Some(e) = &meta.etag {
        return e.clone();
    }
    record
        .md5_hex()
        .unwrap_or_else(|| format!("{:x}-{:x}", record.size, record.changed_ms))
}

/// An S3 error as the XML answer clients parse.
pub fn error_response(e: &S3Error) -> Response {
    let status = e.status_code().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
        escape(e.code().as_str()),
        escape(e.message().unwrap_or_default())
    );
    let mut res = (status, xml).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    res
}

/// XML text escaping.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for good in ["abc", "my-bucket.1", "a1b"] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            "192.168.1.1",
            ".abc",
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        assert!(check_bucket_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn object_keys() {
        assert_eq!(object_key("b", "x/y").unwrap(), b"/b/x/y");
        assert!(object_key("b", "").is_err());
        assert!(object_key("b", "a/../c").is_err());
        assert!(object_key("b", "a\u{1}").is_err());
        let long = "k".repeat(2000);
        assert_eq!(
            *object_key("b", &long).unwrap_err().code(),
            S3ErrorCode::KeyTooLongError
        );
    }
}
