//! The small HTTP server behind `/metrics` and the `[control]` endpoint: hyper on a tokio
//! runtime of its own thread, so a scrape never waits on training, and no client can stall
//! it: connections are served concurrently, a request's headers must arrive within
//! [`HEADER_TIMEOUT`], headers larger than [`MAX_HEADER_BYTES`] are refused (431) without
//! being read whole, bodies are never read, and at most [`MAX_CONNECTIONS`] are open at once
//! (more are closed at accept). Keep-alive is hyper's: an idle connection is closed when its
//! next request's headers do not arrive in time.

use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

/// Time a client has to send a request's headers (and, on a kept-alive connection, its next
/// request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;

/// What a handler sees of a request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query (`/lr?value=0.1`).
    pub target: String,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A response: status, content type, body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The response body, sent as is with its length.
    pub body: String,
}

impl Response {
    /// A response with `status`, `content_type` and `body`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Response { status, content_type, body: body.into() }
    }
}

/// A request handler (synchronous and quick: it runs on the server's runtime).
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves `listener` with `handler` on a thread named `name` until the process ends.
///
/// # Errors
/// When the thread, the runtime or the listener's non-blocking mode cannot be set up.
pub fn serve(listener: TcpListener, name: &str, handler: Handler) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                // Over the limit: close at once rather than queue.
                let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(respond(&handler, &req)) }
                    });
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .max_buf_size(MAX_HEADER_BYTES)
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    drop(permit);
                });
            }
        });
    })?;
    Ok(())
}

fn respond(handler: &Handler, req: &hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let request = Request {
        method: req.method().as_str().to_owned(),
        target: req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
        authorization: req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
    };
    let r = handler(&request);
    hyper::Response::builder()
        .status(r.status)
        .header(hyper::header::CONTENT_TYPE, r.content_type)
        .body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::from_static(b"internal error\n"))))
}
