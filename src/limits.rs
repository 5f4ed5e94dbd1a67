//! Limits on what one request or one client may cost: JSON shape, header size, open connections.
//!
//! Body size (413) is axum's `DefaultBodyLimit`; the request deadline (408) is tower-http's `TimeoutLayer`;
//! both are wired in `routes::router`, as is the [`BodyBudget`] that bounds body bytes in flight (503).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::{connect_info::Connected, Request},
    http::{header::CONTENT_LENGTH, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    serve::{IncomingStream, Listener},
    Json,
};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::sources::RejectReason;

/// Refuses JSON nested deeper than `max_depth` or with an array longer than `max_items`, by scanning the raw
/// bytes once (no allocation, no recursion): a 10,000-deep array is refused before any parser recurses.
pub fn check_json_shape(
    body: &[u8],
    max_depth: usize,
    max_items: usize,
) -> Result<(), RejectReason> {
    // Per open container: Some(items so far) for an array, None for an object.
    let mut stack: Vec<Option<usize>> = Vec::new();
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            // A string is skipped to its closing quote, past its escapes, a word at a time (most of an
            // event is string content). One left open ends the check: the parser says what is wrong.
            b'"' => loop {
                match memchr::memchr2(b'"', b'\\', body.get(i..).unwrap_or_default()) {
                    Some(at) if body[i + at] == b'\\' => i += at + 2,
                    Some(at) => {
                        i += at + 1;
                        break;
                    }
                    None => return Ok(()),
                }
            },
            b'[' | b'{' => {
                if stack.len() >= max_depth {
                    return Err(RejectReason::BadRequest(format!(
                        "JSON nested deeper than {max_depth} levels (MAX_JSON_DEPTH)"
                    )));
                }
                stack.push((b == b'[').then_some(1));
            }
            b']' | b'}' => {
                stack.pop();
            }
            b',' => {
                if let Some(Some(items)) = stack.last_mut() {
                    *items += 1;
                    if *items > max_items {
                        return Err(RejectReason::BadRequest(format!(
                            "a JSON array holds more than {max_items} items (MAX_ARRAY_ITEMS)"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// 431 when the request's headers together exceed `max` bytes.
pub async fn limit_header_bytes(max: usize, request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > max {
        tracing::warn!(path = %request.uri().path(), size, max, "request refused: headers too large");
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Json(
                json!({ "error": format!("request headers over {max} bytes (MAX_HEADER_BYTES)") }),
            ),
        )
            .into_response();
    }
    next.run(request).await
}

/// Body bytes being received at once across all requests, before any signature is checked: the memory that
/// unsigned bodies can cost is bounded by this, not by the number of connections times the body limit.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.clamp(1, Semaphore::MAX_PERMITS))),
            total,
        }
    }

    /// The budget, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Room for a body of a request with these headers, whose route takes at most `max_body` bytes: the
    /// declared `Content-Length` (capped at `max_body`, which is all a longer body is read of before its
    /// 413), or `max_body` for a body of unknown length. `None` when the budget has no such room now: the
    /// caller answers 503 instead of waiting, so a flood of large bodies costs no more memory.
    pub fn try_take(&self, headers: &HeaderMap, max_body: usize) -> Option<OwnedSemaphorePermit> {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let bytes = declared
            .unwrap_or(max_body)
            .min(max_body)
            .min(self.total)
            .max(1);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.bytes.clone().try_acquire_many_owned(permits).ok()
    }
}

/// A TCP listener that holds at most `max` connections open: past that, new clients wait in the kernel's
/// accept queue instead of costing memory here.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (io, addr) = Listener::accept(&mut self.inner).await;
        (
            LimitedStream {
                io,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that gives its place back when it closes.
pub struct LimitedStream {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The client's address, as handlers see it.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, LimitedListener>> for RemoteAddr {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        RemoteAddr(*stream.remote_addr())
    }
}

impl std::fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(check_json_shape(deep.as_bytes(), 32, 10_000).is_err());
        let ok = "[".repeat(32) + &"]".repeat(32);
        assert!(check_json_shape(ok.as_bytes(), 32, 10_000).is_ok());
        let obj = r#"{"a":"#.repeat(40) + "1" + &"}".repeat(40);
        assert!(check_json_shape(obj.as_bytes(), 32, 10_000).is_err());
    }

    #[test]
    fn brackets_and_commas_inside_strings_do_not_count() {
        let s = format!(r#"{{"a":"{}","b":"\"[,,,"}}"#, "[".repeat(100));
        assert!(check_json_shape(s.as_bytes(), 4, 2).is_ok());
        // An escaped backslash ends in the string's own closing quote: what follows counts again.
        let after = r#"{"a":"x\\","b":[[[[[1]]]]]}"#;
        assert!(check_json_shape(after.as_bytes(), 4, 2).is_err());
        assert!(check_json_shape(after.as_bytes(), 6, 2).is_ok());
        // A string left open (or an escape at the very end) is the parser's to name, not a panic here.
        for open in [r#"{"a":"[[[[[["#, r#"{"a":"\"#, "\""] {
            assert!(check_json_shape(open.as_bytes(), 4, 2).is_ok(), "{open}");
        }
    }

    #[test]
    fn the_body_budget_lends_declared_lengths_and_refuses_past_its_total() {
        let budget = BodyBudget::new(100);
        let mut sized = HeaderMap::new();
        sized.insert(CONTENT_LENGTH, "60".parse().unwrap());
        let first = budget
            .try_take(&sized, 1000)
            .expect("60 of 100 bytes are free");
        assert!(budget.try_take(&sized, 1000).is_none(), "only 40 are left");
        // A body of unknown length reserves the route's whole limit.
        assert!(budget.try_take(&HeaderMap::new(), 50).is_none());
        assert!(budget.try_take(&HeaderMap::new(), 40).is_some());
        drop(first);
        // A declared length past the route's limit costs only the limit: that is all that is read of it.
        let mut huge = HeaderMap::new();
        huge.insert(CONTENT_LENGTH, "999999999".parse().unwrap());
        assert!(budget.try_take(&huge, 30).is_some());
    }

    #[test]
    fn long_arrays_are_refused() {
        let items = ["1"; 11].join(",");
        assert!(check_json_shape(format!("[{items}]").as_bytes(), 8, 10).is_err());
        assert!(check_json_shape(format!("{{\"a\":[{items}]}}").as_bytes(), 8, 11).is_ok());
    }
}
