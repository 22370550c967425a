//! `Expect: 100-continue` and botocore (aws-cli, boto3): closing the connection after
//! an answer that came without a `100 Continue` first.
//!
//! botocore sends `Expect: 100-continue` with every upload. When the server answers
//! with a final status instead of `100 Continue` (hyper sends 100 only when the handler
//! reads the body: never for an empty body, not for a request refused before its body
//! is read), botocore keeps that answer's status line in the connection and, for the
//! next request on the same connection that also expects 100, uses it instead of
//! reading the real one — the real status line is then parsed as a header and the
//! answer comes back without headers (an UploadPart "without" ETag: aws-cli's
//! `upload failed: … 'ETag'` after syncing an empty file). `Connection: close` on such
//! answers makes the client open a new connection, with fresh state, for the next
//! request.

use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// Whether an answer to a request that expected `100 Continue` may have gone out
/// without one: the request has no body (hyper sends no 100 for it), or the answer is
/// not a success (the body may not have been read). A successful upload read its body,
/// so hyper sent the 100 first.
fn maybe_without_continue(empty_body: bool, success: bool) -> bool {
    empty_body || !success
}

/// The middleware: see the module docs.
pub async fn close_after_unexpected_answer(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let expects = headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        return next.run(req).await;
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let empty_body =
        declared == Some(0) || (declared.is_none() && !headers.contains_key(TRANSFER_ENCODING));
    let mut res = next.run(req).await;
    if maybe_without_continue(empty_body, res.status().is_success()) {
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::maybe_without_continue;

    #[test]
    fn closes_when_no_continue_may_have_been_sent() {
        assert!(maybe_without_continue(true, true));
        assert!(maybe_without_continue(true, false));
        assert!(maybe_without_continue(false, false));
        assert!(!maybe_without_continue(false, true));
    }
}
