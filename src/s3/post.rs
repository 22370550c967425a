//! POST Object: browser form uploads (`multipart/form-data` POSTed to a bucket's URL).
//!
//! Handled here, in front of s3s, which would buffer the whole file in memory before
//! checking anything (an anonymous 18 MB form grew the server by a gigabyte):
//!
//! 1. The form's fields — everything before the `file` part, at most [`MAX_FIELDS`]
//!    bytes — are read; nothing else is buffered before authentication.
//! 2. The form must be signed by a known user: a SigV4 POST signature
//!    (`x-amz-signature` over the `policy` field), or SigV2 (`signature`,
//!    `AWSAccessKeyId`) when the server runs with `--s3-allow-sigv2`. Anonymous forms
//!    are refused (`AccessDenied`), as every anonymous S3 request; a wrong signature is
//!    `SignatureDoesNotMatch` — in both cases before a byte of the file is read.
//! 3. The policy must not have expired, its `eq` / `starts-with` conditions must hold
//!    and every field must be named by one (as on S3).
//! 4. The file is streamed into the store like a PutObject body: refused with
//!    `EntityTooLarge` past `--s3-max-post-size` or the policy's
//!    `content-length-range` maximum (`EntityTooSmall` below its minimum), the write
//!    then failing like a PutObject whose body fails.
//!
//! Fields after the file are ignored (as on S3). The answer follows
//! `success_action_redirect` (303) or `success_action_status` (200, 201 with the XML
//! `PostResponse`, 204 by default).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use s3s::dto::{Metadata, Timestamp, TimestampFormat};
use s3s::post_policy::{PostPolicy, PostPolicyCondition};
use s3s::{s3_error, S3Error, S3ErrorCode};

use super::errors::{error_response, escape, object_key};
use super::Front;

/// Most bytes of a form before its file (all fields with their part headers): what is
/// buffered before the form's signature is checked.
pub const MAX_FIELDS: usize = 256 << 10;

/// The body of a request, as a stream of chunks.
type BodyStream = BoxStream<'static, Result<Bytes, axum::Error>>;

/// Middleware: serves POST Object forms, passes every other request on.
pub async fn intercept(State(front): State<Arc<Front>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !is_form(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut form = Form::new(body.into_data_stream().boxed(), &parts.headers);
    match handle(&front, &parts, &mut form).await {
        Ok(res) => res,
        Err(e) => {
            // A client still sending the file gets the answer rather than a reset
            // (bounded: at most a few MiB are read and thrown away, then the
            // connection closes). The fields were read, so a client that sent
            // `Expect: 100-continue` got its 100 and is sending: drain it too.
            if let Some(form) = form {
                crate::http::drain_rejected(&axum::http::HeaderMap::new(), form.body).await;
            }
            let mut res = error_response(&e);
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}

/// Whether the request's body is a `multipart/form-data` form (what s3s takes for a
/// POST Object).
fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers.get_all(header::CONTENT_TYPE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.trim_start()
                .get(..19)
                .is_some_and(|t| t.eq_ignore_ascii_case("multipart/form-data"))
        })
    })
}

fn malformed(why: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::MalformedPOSTRequest, why.to_string())
}

/// One POST Object: fields, authentication, policy, then the file into the store.
/// `form` is `None` once the file has been read (nothing is left to drain).
async fn handle(
    front: &Front,
    parts: &axum::http::request::Parts,
    form: &mut Option<Form>,
) -> Result<Response, S3Error> {
    let Some(reader) = form.as_mut() else {
        return Err(malformed("no form"));
    };
    let bucket = target_bucket(front, parts)?;
    let (fields, file) = reader.fields().await?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };

    // Who signed it; nothing of the file is read before this holds.
    let (policy_b64, access) = if field("x-amz-signature").is_some() {
        check_v4(front, &field).await?
    } else if field("signature").is_some() {
        check_v2(front, &field).await?
    } else {
        return Err(s3_error!(
            AccessDenied,
            "anonymous uploads are refused: sign the form (SigV4 POST policy)"
        ));
    };
    let policy = PostPolicy::from_base64(policy_b64)
        .map_err(|e| s3_error!(InvalidPolicyDocument, "cannot parse the POST policy: {e}"))?;
    if expired(&policy.expiration)? {
        return Err(s3_error!(
            AccessDenied,
            "Invalid according to Policy: Policy expired."
        ));
    }
    check_conditions(&policy, &fields, &bucket)?;
    // Tenancy: the same rule as every S3 operation (`super::access`).
    let who = crate::store::tenancy::Principal::Key(access.to_string());
    front
        .store
        .read_barrier()
        .await
        .map_err(|e| super::errors::store_error(e.into()))?;
    front
        .store
        .authorize_bucket(&who, &bucket, crate::store::tenancy::Access::Write)
        .map_err(super::errors::store_error)?;

    let key_field = field("key").ok_or_else(|| {
        s3_error!(
            InvalidArgument,
            "Bucket POST must contain a field named 'key'."
        )
    })?;
    let key = key_field.replace("${filename}", file.filename.as_deref().unwrap_or(""));
    let hoard_key = object_key(&bucket, &key)?;
    super::buckets::require(&front.store, &bucket)?;
    let meta = meta(&fields, file.content_type.as_deref())?;

    let (min, max) = match policy.content_length_range() {
        Some((min, max)) => (min, max.min(front.max_post)),
        None => (0, front.max_post),
    };
    let why = Arc::new(Mutex::new(None));
    let Some(reader) = form.take() else {
        return Err(malformed("no form"));
    };
    let body = FileBody {
        form: reader,
        seen: 0,
        min,
        max,
        done: false,
        why: Arc::clone(&why),
    }
    .into_stream();
    let written = match super::objects::write(&front.store, hoard_key, body, None, meta).await {
        Ok(w) => w,
        Err(e) => {
            let cause = why.lock().unwrap_or_else(PoisonError::into_inner).take();
            return Err(cause.unwrap_or(e));
        }
    };
    let etag = format!(
        "\"{}\"",
        written.md5.map(|m| crate::hex::hex(&m)).unwrap_or_default()
    );
    Ok(answer(&fields, &bucket, &key, &etag, parts))
}

/// The answer to a stored form: `success_action_redirect`, else `success_action_status`.
fn answer(
    fields: &[(String, String)],
    bucket: &str,
    key: &str,
    etag: &str,
    parts: &axum::http::request::Parts,
) -> Response {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    /// A key in a URL path: `/` and the unreserved characters stay.
    const PATH: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let location = format!("http://{host}/{bucket}/{}", utf8_percent_encode(key, PATH));
    let redirect = field("success_action_redirect").or_else(|| field("redirect"));
    let mut res = match redirect.filter(|r| !r.is_empty()) {
        Some(to) => {
            let sep = if to.contains('?') { '&' } else { '?' };
            let to = format!(
                "{to}{sep}bucket={}&key={}&etag={}",
                enc(bucket),
                enc(key),
                enc(etag)
            );
            let mut res = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res
        }
        None => match field("success_action_status") {
            Some("200") => StatusCode::OK.into_response(),
            Some("201") => {
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><PostResponse><Location>{}</Location>\
                     <Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></PostResponse>",
                    escape(&location),
                    escape(bucket),
                    escape(key),
                    escape(etag)
                );
                let mut res = (StatusCode::CREATED, xml).into_response();
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml"),
                );
                res
            }
            _ => StatusCode::NO_CONTENT.into_response(),
        },
    };
    if let Ok(v) = HeaderValue::from_str(etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    if !res.headers().contains_key(header::LOCATION) {
        if let Ok(v) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(header::LOCATION, v);
        }
    }
    res
}

/// The bucket a form is POSTed to: `/bucket` (path style) or `/` of `bucket.DOMAIN`
/// (virtual-hosted style with `--s3-domain`).
fn target_bucket(front: &Front, parts: &axum::http::request::Parts) -> Result<String, S3Error> {
    let path = parts.uri.path();
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| s3_error!(InvalidURI))?;
    if let Some(bucket) = super::sigv2::virtual_bucket(front.domain.as_deref(), &parts.headers) {
        if decoded != "/" {
            return Err(s3_error!(
                MethodNotAllowed,
                "POST Object goes to the bucket's URL"
            ));
        }
        return Ok(bucket);
    }
    let name = decoded.trim_start_matches('/');
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() || name.contains('/') {
        return Err(s3_error!(
            MethodNotAllowed,
            "POST Object goes to the bucket's URL"
        ));
    }
    super::errors::check_bucket_name(name)?;
    Ok(name.to_string())
}

/// Checks a SigV4 POST signature; the policy it signs and the access key.
async fn check_v4<'a>(
    front: &Front,
    field: &impl Fn(&str) -> Option<&'a str>,
) -> Result<(&'a str, &'a str), S3Error> {
    let missing = |name: &str| s3_error!(InvalidArgument, "the form has no field {name}");
    let policy = field("policy").ok_or_else(|| missing("policy"))?;
    let signature = field("x-amz-signature").ok_or_else(|| missing("x-amz-signature"))?;
    let algorithm = field("x-amz-algorithm").ok_or_else(|| missing("x-amz-algorithm"))?;
    let credential = field("x-amz-credential").ok_or_else(|| missing("x-amz-credential"))?;
    let date = field("x-amz-date").ok_or_else(|| missing("x-amz-date"))?;
    if algorithm != "AWS4-HMAC-SHA256" {
        return Err(s3_error!(
            InvalidArgument,
            "x-amz-algorithm must be AWS4-HMAC-SHA256"
        ));
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [access, day, region, service, "aws4_request"] = scope[..] else {
        return Err(s3_error!(
            InvalidArgument,
            "x-amz-credential is not ACCESS/DATE/REGION/SERVICE/aws4_request"
        ));
    };
    if !date.starts_with(day) || day.len() != 8 {
        return Err(s3_error!(
            SignatureDoesNotMatch,
            "the credential's date is not x-amz-date's"
        ));
    }
    let secret = super::auth::secret(&front.store, access).await?;
    let key = super::sigv2::sigv4_signing_key(&secret, day, region, service);
    let want = crate::hex::hex(&super::sigv2::hmac_sha256(&key, policy.as_bytes()));
    if !super::sigv2::ct_eq(want.as_bytes(), signature.as_bytes()) {
        return Err(s3_error!(SignatureDoesNotMatch));
    }
    Ok((policy, access))
}

/// Checks a SigV2 POST signature (only with `--s3-allow-sigv2`); the policy it signs
/// and the access key.
async fn check_v2<'a>(
    front: &Front,
    field: &impl Fn(&str) -> Option<&'a str>,
) -> Result<(&'a str, &'a str), S3Error> {
    if !front.allow_sigv2 {
        return Err(super::sigv2::disabled());
    }
    let policy = field("policy")
        .ok_or_else(|| s3_error!(InvalidArgument, "the form has no field policy"))?;
    let signature = field("signature").unwrap_or_default();
    let access = field("awsaccesskeyid")
        .ok_or_else(|| s3_error!(InvalidArgument, "the form has no field AWSAccessKeyId"))?;
    let secret = super::auth::secret(&front.store, access).await?;
    let want = super::sigv2::sign_v2(&secret, policy);
    if !super::sigv2::ct_eq(want.as_bytes(), signature.as_bytes()) {
        return Err(s3_error!(SignatureDoesNotMatch));
    }
    Ok((policy, access))
}

/// Whether a policy's expiration is past.
fn expired(expiration: &Timestamp) -> Result<bool, S3Error> {
    let mut text = Vec::new();
    expiration
        .format(TimestampFormat::EpochSeconds, &mut text)
        .map_err(|e| s3_error!(InvalidPolicyDocument, "policy expiration: {e}"))?;
    let at: f64 = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| s3_error!(InvalidPolicyDocument, "policy expiration"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Ok(now >= at)
}

/// The policy's `eq` and `starts-with` conditions hold, and every field that is not
/// exempt is named by one (as S3 requires).
fn check_conditions(
    policy: &PostPolicy,
    fields: &[(String, String)],
    bucket: &str,
) -> Result<(), S3Error> {
    let value = |name: &str| -> Result<Option<&str>, S3Error> {
        let form = fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        if name == "bucket" {
            if form.is_some_and(|f| f != bucket) {
                return Err(s3_error!(
                    InvalidPolicyDocument,
                    "the form's bucket field is not the URL's bucket"
                ));
            }
            return Ok(Some(bucket));
        }
        Ok(form)
    };
    for c in &policy.conditions {
        match c {
            PostPolicyCondition::Eq { field, value: want } => {
                if value(field)? != Some(want.as_str()) {
                    return Err(s3_error!(
                        AccessDenied,
                        "Invalid according to Policy: Policy Condition failed: [\"eq\", \"${field}\", \"{want}\"]"
                    ));
                }
            }
            PostPolicyCondition::StartsWith { field, prefix } => {
                if !value(field)?
                    .unwrap_or_default()
                    .starts_with(prefix.as_str())
                {
                    return Err(s3_error!(
                        AccessDenied,
                        "Invalid according to Policy: Policy Condition failed: [\"starts-with\", \"${field}\", \"{prefix}\"]"
                    ));
                }
            }
            PostPolicyCondition::ContentLengthRange { .. } => {}
        }
    }
    for (name, _) in fields {
        let exempt = matches!(
            name.as_str(),
            "x-amz-signature" | "signature" | "awsaccesskeyid" | "file" | "policy" | "submit"
        ) || name.starts_with("x-ignore-");
        let named = policy.conditions.iter().any(|c| match c {
            PostPolicyCondition::Eq { field, .. }
            | PostPolicyCondition::StartsWith { field, .. } => field == name,
            PostPolicyCondition::ContentLengthRange { .. } => false,
        });
        if !exempt && !named {
            return Err(s3_error!(
                AccessDenied,
                "Invalid according to Policy: Extra input fields: {name}"
            ));
        }
    }
    Ok(())
}

/// The object's metadata from the form: `Content-Type` (the field, else the file
/// part's), `Cache-Control`, `Content-Disposition`, `Content-Encoding`,
/// `x-amz-meta-*`.
fn meta(
    fields: &[(String, String)],
    file_type: Option<&str>,
) -> Result<crate::store::ObjectMeta, S3Error> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let user: Metadata = fields
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("x-amz-meta-")?.to_string(), v.clone())))
        .collect();
    super::objects::meta_from(
        field("content-type").or_else(|| file_type.map(str::to_string)),
        field("content-encoding"),
        field("content-disposition"),
        None,
        field("cache-control"),
        (!user.is_empty()).then_some(user),
    )
}

/// The file part's headers.
#[derive(Debug)]
struct FilePart {
    filename: Option<String>,
    content_type: Option<String>,
}

/// A `multipart/form-data` body read incrementally.
struct Form {
    body: BodyStream,
    /// Read and not yet consumed. Starts with a CRLF so that the first boundary looks
    /// like every other one.
    buf: BytesMut,
    /// `CRLF--boundary`: what ends every part.
    delim: Vec<u8>,
    /// Bytes consumed before the file.
    consumed: usize,
}

impl Form {
    /// `None` when the Content-Type names no boundary (then answered as malformed).
    fn new(body: BodyStream, headers: &axum::http::HeaderMap) -> Option<Form> {
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let boundary = ct.split(';').skip(1).find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })?;
        if boundary.is_empty() || boundary.len() > 200 {
            return None;
        }
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary.as_bytes());
        Some(Form {
            body,
            buf: BytesMut::from(&b"\r\n"[..]),
            delim,
            consumed: 0,
        })
    }

    /// Reads one more chunk; `false` at the end of the body.
    async fn fill(&mut self) -> Result<bool, S3Error> {
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(s3_error!(IncompleteBody, "reading the form: {e}")),
            None => Ok(false),
        }
    }

    /// Reads until `pat` is buffered (before the file: within [`MAX_FIELDS`]); its
    /// position.
    async fn find(&mut self, pat: &[u8]) -> Result<usize, S3Error> {
        let mut from = 0;
        loop {
            if let Some(i) = find(&self.buf[from..], pat) {
                return Ok(from + i);
            }
            from = self.buf.len().saturating_sub(pat.len());
            if self.consumed + self.buf.len() > MAX_FIELDS {
                return Err(s3_error!(
                    MaxPostPreDataLengthExceededError,
                    "the form's fields before the file exceed {MAX_FIELDS} bytes"
                ));
            }
            if !self.fill().await? {
                return Err(malformed("the form ends early"));
            }
        }
    }

    fn consume(&mut self, n: usize) -> Bytes {
        self.consumed += n;
        self.buf.split_to(n).freeze()
    }

    /// The fields (lower-case names) up to the file part, whose headers it returns; the
    /// buffer then starts with the file's first byte.
    async fn fields(&mut self) -> Result<(Vec<(String, String)>, FilePart), S3Error> {
        let delim = self.delim.clone();
        let at = self.find(&delim).await?;
        self.consume(at + delim.len());
        let mut fields = Vec::new();
        loop {
            // After a boundary: `--` ends the form, else the rest of the line.
            let eol = self.find(b"\r\n").await?;
            let line = self.consume(eol + 2);
            if line.starts_with(b"--") {
                return Err(s3_error!(
                    InvalidArgument,
                    "POST requires exactly one file upload per request"
                ));
            }
            // The part's headers, up to an empty line (none: the empty line at once).
            let headers = if self.find(b"\r\n").await? == 0 {
                self.consume(2);
                Bytes::new()
            } else {
                let end = self.find(b"\r\n\r\n").await?;
                self.consume(end + 4)
            };
            let headers = std::str::from_utf8(&headers)
                .map_err(|_| malformed("form part headers are not UTF-8"))?;
            let (name, filename, content_type) = part_headers(headers)?;
            if name.eq_ignore_ascii_case("file") {
                return Ok((
                    fields,
                    FilePart {
                        filename,
                        content_type,
                    },
                ));
            }
            let end = self.find(&delim).await?;
            let value = self.consume(end);
            self.consume(delim.len());
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| malformed(format!("form field {name} is not UTF-8")))?;
            fields.push((name.to_ascii_lowercase(), value));
        }
    }
}

/// Name, file name and content type from a part's headers.
#[allow(clippy::type_complexity)]
fn part_headers(headers: &str) -> Result<(String, Option<String>, Option<String>), S3Error> {
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in headers.split("\r\n") {
        let Some((h, v)) = line.split_once(':') else {
            continue;
        };
        if h.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(v.trim().to_string());
        } else if h.trim().eq_ignore_ascii_case("content-disposition") {
            for param in v.split(';').skip(1) {
                let Some((k, v)) = param.trim().split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_string();
                match k.trim().to_ascii_lowercase().as_str() {
                    "name" => name = Some(v),
                    "filename" => filename = Some(v),
                    _ => {}
                }
            }
        }
    }
    let name = name.ok_or_else(|| malformed("a form part has no name"))?;
    Ok((name, filename, content_type))
}

/// Position of `pat` in `hay`.
fn find(hay: &[u8], pat: &[u8]) -> Option<usize> {
    if pat.is_empty() || hay.len() < pat.len() {
        return None;
    }
    let first = pat[0];
    let mut i = 0;
    while i + pat.len() <= hay.len() {
        match hay[i..=hay.len() - pat.len()]
            .iter()
            .position(|&b| b == first)
        {
            Some(p) => i += p,
            None => return None,
        }
        if hay[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The file of a form, up to its closing boundary, as a body for the store; refused
/// past `max` or below `min` bytes (the cause is left in `why`).
struct FileBody {
    form: Form,
    seen: u64,
    min: u64,
    max: u64,
    done: bool,
    why: Arc<Mutex<Option<S3Error>>>,
}

impl FileBody {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin + 'static {
        futures_util::stream::unfold(self, |mut fb| async move {
            if fb.done {
                return None;
            }
            match fb.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), fb)),
                Ok(None) => None,
                Err(e) => {
                    fb.done = true;
                    let text = e.message().unwrap_or("the form's file failed").to_string();
                    *fb.why.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                    Some((Err(text), fb))
                }
            }
        })
        .boxed()
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, S3Error> {
        let d = self.form.delim.len();
        loop {
            if let Some(i) = find(&self.form.buf, &self.form.delim) {
                if i == 0 {
                    self.done = true;
                    if self.seen < self.min {
                        return Err(s3_error!(
                            EntityTooSmall,
                            "Your proposed upload is smaller than the minimum allowed size"
                        ));
                    }
                    return Ok(None);
                }
                let chunk = self.form.buf.split_to(i).freeze();
                return self.count(chunk).map(Some);
            }
            // Everything but what could be the start of the boundary is file. The few
            // bytes kept go to a buffer of their own, so that the next chunk is not
            // appended to (and does not grow) the allocation the chunk given away shares.
            if self.form.buf.len() >= d {
                let n = self.form.buf.len() + 1 - d;
                let chunk = self.form.buf.split_to(n).freeze();
                self.form.buf = BytesMut::from(&self.form.buf[..]);
                return self.count(chunk).map(Some);
            }
            if !self.form.fill().await? {
                return Err(malformed(
                    "the form ends before the closing boundary of its file",
                ));
            }
        }
    }

    fn count(&mut self, chunk: Bytes) -> Result<Bytes, S3Error> {
        self.seen += chunk.len() as u64;
        if self.seen > self.max {
            return Err(s3_error!(
                EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed size ({} bytes)",
                self.max
            ));
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_of(body: &'static [u8], chunk: usize) -> Form {
        let chunks: Vec<Result<Bytes, axum::Error>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        Form::new(futures_util::stream::iter(chunks).boxed(), &headers).unwrap()
    }

    const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"Key\"\r\n\r\na/${filename}\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"x-amz-meta-x\"\r\n\r\n1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\n\
hello\r\n--Xy world\r\n--XyZ\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\nignored\r\n--XyZ--\r\n";

    #[tokio::test]
    async fn fields_then_the_file_streamed_to_its_boundary_in_any_chunking() {
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let mut form = form_of(BODY, chunk);
            let (fields, file) = form.fields().await.unwrap();
            assert_eq!(
                fields,
                [
                    ("key".to_string(), "a/${filename}".to_string()),
                    ("x-amz-meta-x".to_string(), "1".to_string())
                ]
            );
            assert_eq!(file.filename.as_deref(), Some("f.txt"));
            assert_eq!(file.content_type.as_deref(), Some("text/plain"));
            let why = Arc::new(Mutex::new(None));
            let fb = FileBody {
                form,
                seen: 0,
                min: 0,
                max: 100,
                done: false,
                why,
            };
            let parts: Vec<Bytes> = fb
                .into_stream()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
                .await;
            assert_eq!(parts.concat(), b"hello\r\n--Xy world", "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn limits() {
        let mut form = form_of(BODY, 5);
        form.fields().await.unwrap();
        let why = Arc::new(Mutex::new(None));
        let fb = FileBody {
            form,
            seen: 0,
            min: 0,
            max: 10,
            done: false,
            why: Arc::clone(&why),
        };
        let results: Vec<_> = fb.into_stream().collect().await;
        assert!(results.last().unwrap().is_err());
        let e = why.lock().unwrap().take().unwrap();
        assert_eq!(e.code(), &S3ErrorCode::EntityTooLarge);

        // Fields beyond MAX_FIELDS before any file.
        let big: &'static [u8] = Box::leak(
            format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n{}",
                "x".repeat(MAX_FIELDS + 10)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let mut form = form_of(big, 4096);
        let e = form.fields().await.unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::MaxPostPreDataLengthExceededError);

        // No file at all.
        let mut form = form_of(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--XyZ--\r\n",
            3,
        );
        let e = form.fields().await.unwrap_err();
        assert_eq!(e.code(), &S3ErrorCode::InvalidArgument);
    }
}
