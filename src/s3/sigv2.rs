//! Signature Version 2: refused unless the server runs with `--s3-allow-sigv2`.
//!
//! SigV2 signs no payload and s3s accepts a SigV2 header with any date and compares
//! signatures with `!=`: a captured request would stay valid forever. So by default a
//! request signed with SigV2 — an `Authorization: AWS KEY:SIG` header, a presigned URL
//! with `Signature=` or a POST form with a `signature` field — is refused with
//! `AccessDenied` before s3s sees it. With `--s3-allow-sigv2`, this module checks the
//! request first: the `Date` (or `x-amz-date`) of a header-signed request must be within
//! [`MAX_SKEW`] of the server's clock (`RequestTimeTooSkewed`), and the signature is
//! recomputed (the same string to sign as s3s's) and compared in constant time
//! (`SignatureDoesNotMatch`); only then does s3s check it again, equal by then. A
//! presigned URL's `Expires` is checked by s3s.
//!
//! Also the few primitives the POST Object handler ([`super::post`]) shares: SigV4
//! signing keys, HMAC-SHA256, HMAC-SHA1 and a constant-time comparison.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Uri};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use s3s::crypto::Checksum as _;
use s3s::{s3_error, S3Error};
use sha2::Sha256;

use super::Front;

/// Largest difference between a SigV2 request's date and the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The error for a SigV2 request while SigV2 is off.
pub fn disabled() -> S3Error {
    s3_error!(
        AccessDenied,
        "Signature Version 2 is not accepted by this server: sign with SigV4 \
         (or start the server with --s3-allow-sigv2)"
    )
}

/// How a request is signed with SigV2, if it is (as s3s decides it).
enum V2<'a> {
    /// `Authorization: AWS ACCESS:SIGNATURE`.
    Header { access: &'a str, signature: &'a str },
    /// A presigned URL: `?AWSAccessKeyId=…&Expires=…&Signature=…`.
    Presigned,
}

/// Middleware: refuses SigV2 requests, or checks them with `--s3-allow-sigv2`.
pub async fn guard(State(front): State<Arc<Front>>, req: Request, next: Next) -> Response {
    // The head alone is held across the key lookup (a body is not `Sync`).
    let (parts, body) = req.into_parts();
    let query = query_pairs(parts.uri.query().unwrap_or_default());
    let kind = if query.iter().any(|(k, _)| k == "Signature") {
        Some(V2::Presigned)
    } else {
        unique(&parts.headers, header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("AWS "))
            .and_then(|v| v.split_once(':'))
            .map(|(access, signature)| V2::Header { access, signature })
    };
    let Some(kind) = kind else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let checked = if front.allow_sigv2 {
        check(&front, &parts, &query, &kind).await
    } else {
        Err(disabled())
    };
    let mut req = Request::from_parts(parts, body);
    match checked {
        Ok(None) => next.run(req).await,
        Ok(Some(uri)) => {
            *req.uri_mut() = uri;
            next.run(req).await
        }
        Err(e) => super::errors::error_response(&e),
    }
}

/// `uri` with a `/` appended to its path.
fn with_slash(uri: &Uri) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// Checks a SigV2 request's date and signature (constant time). botocore and s3cmd
/// sign a path-style bucket request `/bucket` as `/bucket/`: when only that matches,
/// the URI to pass on instead (with the `/`, the same bucket request, which s3s then
/// checks alike).
async fn check(
    front: &Front,
    req: &axum::http::request::Parts,
    query: &[(String, String)],
    kind: &V2<'_>,
) -> Result<Option<Uri>, S3Error> {
    let headers = &req.headers;
    let (access, signature) = match kind {
        V2::Header { access, signature } => {
            let date = unique(headers, "x-amz-date")
                .or_else(|| unique(headers, "date"))
                .ok_or_else(|| {
                    s3_error!(
                        AccessDenied,
                        "a SigV2 request needs a Date or x-amz-date header"
                    )
                })?;
            let at = httpdate::parse_http_date(date)
                .map_err(|_| s3_error!(AccessDenied, "cannot parse the request's date {date:?}"))?;
            let now = SystemTime::now();
            let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
            if skew > MAX_SKEW {
                return Err(s3_error!(
                    RequestTimeTooSkewed,
                    "The difference between the request time and the server's time is too large"
                ));
            }
            (*access, *signature)
        }
        V2::Presigned => {
            let get = |name: &str| unique_query(query, name);
            let access = get("AWSAccessKeyId").ok_or_else(|| {
                s3_error!(AccessDenied, "a presigned SigV2 URL needs AWSAccessKeyId")
            })?;
            (access, get("Signature").unwrap_or_default())
        }
    };
    let secret = super::auth::secret(&front.store, access).await?;
    let mode_presigned = matches!(kind, V2::Presigned);
    let vh = virtual_bucket(front.domain.as_deref(), headers);
    let matches = |path: &str| {
        let to_sign = string_to_sign(
            mode_presigned,
            req.method.as_str(),
            path,
            query,
            headers,
            vh.as_deref(),
        );
        ct_eq(sign_v2(&secret, &to_sign).as_bytes(), signature.as_bytes())
    };
    let path = req.uri.path();
    if matches(path) {
        return Ok(None);
    }
    let bucket_only = vh.is_none() && path.len() > 1 && !path[1..].contains('/');
    if bucket_only && matches(&format!("{path}/")) {
        return with_slash(&req.uri)
            .map(Some)
            .ok_or_else(|| s3_error!(InvalidURI));
    }
    Err(s3_error!(SignatureDoesNotMatch))
}

/// The value of a header that appears exactly once (as s3s reads them).
fn unique<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

fn unique_query<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut all = query.iter().filter(|(k, _)| k == name);
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    Some(first.1.as_str())
}

/// The query's pairs, decoded as `application/x-www-form-urlencoded`, sorted by name
/// (stable), as s3s's `OrderedQs`.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// The sub-resources a SigV2 string to sign includes (s3s's list, sorted).
const INCLUDED_QUERY: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// SigV2's string to sign, exactly as s3s builds it.
fn string_to_sign(
    presigned: bool,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    vh_bucket: Option<&str>,
) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(method);
    s.push('\n');
    s.push_str(unique(headers, "content-md5").unwrap_or_default());
    s.push('\n');
    s.push_str(unique(headers, "content-type").unwrap_or_default());
    s.push('\n');
    if presigned {
        s.push_str(unique_query(query, "Expires").unwrap_or_default());
    } else if unique(headers, "x-amz-date").is_none() {
        s.push_str(unique(headers, "date").unwrap_or_default());
    }
    s.push('\n');
    let mut amz: Vec<&str> = headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| n.starts_with("x-amz-"))
        .collect();
    amz.sort_unstable();
    amz.dedup();
    for name in amz {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .collect();
        if values.is_empty() {
            continue;
        }
        s.push_str(name);
        s.push(':');
        s.push_str(&values.join(","));
        s.push('\n');
    }
    if let Some(bucket) = vh_bucket {
        s.push('/');
        s.push_str(bucket);
    }
    s.push_str(path);
    let mut first = true;
    for q in INCLUDED_QUERY {
        if let Some(v) = unique_query(query, q) {
            s.push(if first { '?' } else { '&' });
            first = false;
            s.push_str(q);
            if !v.is_empty() {
                s.push('=');
                s.push_str(v);
            }
        }
    }
    s
}

/// The bucket of a virtual-hosted-style request (`BUCKET.DOMAIN`, with `--s3-domain`),
/// as s3s's `SingleDomain` reads the Host header.
pub fn virtual_bucket(domain: Option<&str>, headers: &HeaderMap) -> Option<String> {
    let domain = domain?;
    let host = unique(headers, header::HOST.as_str())?;
    if host.parse::<std::net::SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    if host == domain {
        return None;
    }
    if let Some(bucket) = host.strip_suffix(domain).and_then(|h| h.strip_suffix('.')) {
        return Some(bucket.to_string());
    }
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| host.to_ascii_lowercase())
}

/// Whether `a` and `b` are equal, in a time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: the error cannot happen (and would only make
    // every signature mismatch).
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SigV4's signing key of a secret for a day (`YYYYMMDD`), region and service.
pub fn sigv4_signing_key(secret: &str, day: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, service.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

/// HMAC-SHA1 (RFC 2104 over s3s's SHA-1).
fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..20].copy_from_slice(&s3s::crypto::Sha1::checksum(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = s3s::crypto::Sha1::new();
    inner.update(&k.map(|b| b ^ 0x36));
    inner.update(data);
    let inner = inner.finalize();
    let mut outer = s3s::crypto::Sha1::new();
    outer.update(&k.map(|b| b ^ 0x5c));
    outer.update(&inner);
    outer.finalize()
}

/// A SigV2 signature: base64 of HMAC-SHA1 of `to_sign` with the secret.
pub fn sign_v2(secret: &str, to_sign: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha1(secret.as_bytes(), to_sign.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        let hex = |b: &[u8]| crate::hex::hex(b);
        assert_eq!(
            hex(&hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // A key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn aws_sigv2_example() {
        // AWS's example (RESTAuthentication): GET of a virtual-hosted object.
        let mut headers = HeaderMap::new();
        headers.insert("date", "Tue, 27 Mar 2007 19:36:42 +0000".parse().unwrap());
        headers.insert(
            "host",
            "awsexamplebucket1.s3.us-west-1.amazonaws.com"
                .parse()
                .unwrap(),
        );
        let to_sign = string_to_sign(
            false,
            "GET",
            "/photos/puppy.jpg",
            &[],
            &headers,
            Some("awsexamplebucket1"),
        );
        assert_eq!(
            to_sign,
            "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
        );
        assert_eq!(
            sign_v2("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &to_sign),
            "qgk2+6Sv9/oM7G3qLEjTH1a1l1g="
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
