//! The connection layer under the gRPC, HTTP/REST and metrics listeners, so that what a client
//! can make the server hold stays bounded whatever it does: connections are accepted up to a
//! limit (more are closed at once and counted), served with hyper over HTTP/1.1 or HTTP/2 with a
//! bound on concurrent streams and header size, closed after a spell without requests, and every
//! request body must arrive within a deadline and fit, with all the others being received, in a
//! process-wide byte budget. Each rule has a setting (see [`Limits`]) and a metric when it acts.
//! It also speaks TLS and checks bearer tokens when [`Access`] says so.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::access::{Access, Denied};
use crate::metrics;

/// The bounds of one listener's connections and requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Open connections at most; more are closed as they arrive.
    pub max_connections: usize,
    /// A connection with no request for this long is closed (after its open streams end).
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest header block (HTTP/2) a request may send, in bytes.
    pub max_header_list_size: u32,
    /// Time a request's whole body may take to arrive.
    pub body_timeout: Duration,
    /// HTTP/2 keep-alive pings every this long; a peer that does not answer is dropped.
    pub keepalive_interval: Duration,
    /// On a gRPC listener, the largest request message (RESOURCE_EXHAUSTED past it).
    pub max_grpc_message: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            idle_timeout: Duration::from_secs(300),
            max_concurrent_streams: 64,
            max_header_list_size: 64 * 1024,
            body_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(60),
            max_grpc_message: None,
        }
    }
}

/// Bytes of request bodies being received, over every listener and connection.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` if they fit.
    fn take(&self, bytes: usize) -> bool {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let Some(next) = held.checked_add(bytes).filter(|n| *n <= self.limit) else {
                return false;
            };
            match self
                .held
                .compare_exchange_weak(held, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// A request body under the listener's deadline and the process's byte budget. Its errors are
/// gRPC statuses (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED), which tonic passes on as they are.
pub struct LimitedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    budget: Arc<BodyBudget>,
    held: usize,
    listener: &'static str,
    finished: bool,
    /// On the gRPC listener: the largest message, checked against each message's length prefix.
    messages: Option<MessageLimit>,
}

impl LimitedBody {
    fn new(
        inner: Incoming,
        limits: &Limits,
        budget: Arc<BodyBudget>,
        listener: &'static str,
    ) -> Self {
        LimitedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
            budget,
            held: 0,
            listener,
            finished: false,
            messages: limits.max_grpc_message.map(MessageLimit::new),
        }
    }
}

/// Reads gRPC's length-prefixed messages (1 flag byte, a 4-byte big-endian length, the message)
/// as they arrive, so a message over the limit is refused from its prefix, before it is buffered.
struct MessageLimit {
    max: usize,
    /// Prefix bytes seen of the current message (0..5).
    prefix: [u8; 5],
    prefix_len: usize,
    /// Message bytes still to come after the prefix.
    remaining: usize,
}

impl MessageLimit {
    fn new(max: usize) -> Self {
        MessageLimit {
            max,
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
        }
    }

    /// Follows `data`; the length of a message over the limit.
    fn check(&mut self, mut data: &[u8]) -> Result<(), usize> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len());
                self.remaining -= skip;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                let length = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                if length > self.max {
                    return Err(length);
                }
                self.remaining = length;
                self.prefix_len = 0;
            }
        }
        Ok(())
    }
}

impl Drop for LimitedBody {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(Err(length)) = this.messages.as_mut().map(|m| m.check(data)) {
                        this.finished = true;
                        return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                            "request message of {length} bytes is over the server's limit of {} \
                             bytes (--max-message-size)",
                            this.messages.as_ref().map_or(0, |m| m.max)
                        )))));
                    }
                    if !this.budget.take(data.len()) {
                        metrics::record_refused_body(this.listener, "memory_budget");
                        return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                            "the server is receiving {} MiB of request bodies, its limit \
                             (--max-request-memory); retry later or send smaller requests",
                            this.budget.limit >> 20
                        )))));
                    }
                    this.held += data.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(tonic::Status::cancelled(
                format!("the request body was not received: {err}"),
            )))),
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.finished = true;
                    metrics::record_refused_body(this.listener, "timeout");
                    return Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(
                        "the request body did not arrive in time (--body-timeout)",
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// When a connection last started or finished a request, and how many it has running.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    running: AtomicUsize,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            running: AtomicUsize::new(0),
            last_millis: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let millis = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    /// How long the connection has had no request running.
    fn idle_for(&self) -> Duration {
        if self.running.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Counts a request as running on its connection until its response is ready.
struct Running(Arc<Activity>);

impl Running {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.running.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Running(Arc::clone(activity))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A service taking the connection layer's requests: a tonic router, an axum router, ...
pub trait Handler:
    tower::Service<
        http::Request<LimitedBody>,
        Response = http::Response<Self::ResponseBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    type ResponseBody: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
}

impl<S, B> Handler for S
where
    S: tower::Service<http::Request<LimitedBody>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static,
{
    type ResponseBody = B;
}

/// The rules every listener applies: its limits, the shared body budget, TLS and tokens.
#[derive(Debug, Clone)]
pub struct Policy {
    pub limits: Limits,
    pub budget: Arc<BodyBudget>,
    pub access: Arc<Access>,
}

/// What every connection of a listener shares.
struct Listener<H> {
    name: &'static str,
    handler: H,
    limits: Limits,
    budget: Arc<BodyBudget>,
    access: Arc<Access>,
    builder: auto::Builder<TokioExecutor>,
}

/// The answer to a request the access rules refuse: UNAUTHENTICATED for gRPC, 401 otherwise.
fn denied(
    request: &http::Request<Incoming>,
    why: Denied,
    listener: &'static str,
) -> http::Response<ResponseBody> {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let response = if grpc {
        let (parts, ()) = tonic::Status::unauthenticated(why.message())
            .into_http::<()>()
            .into_parts();
        http::Response::from_parts(parts, empty_body())
    } else {
        let body = serde_json::json!({ "error": why.message() }).to_string();
        let mut response = http::Response::new(full_body(body));
        *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        let headers = response.headers_mut();
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    };
    metrics::record_unauthenticated(listener);
    response
}

/// The response body every listener sends: its handler's, boxed.
type ResponseBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn empty_body() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full_body(text: String) -> ResponseBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl<H: Handler> Listener<H> {
    /// Serves one connection (plain or TLS, its client `client_certified` or not) until it
    /// closes, the server stops, or it idles.
    async fn serve_connection<I>(
        self: Arc<Self>,
        io: I,
        peer: std::net::SocketAddr,
        client_certified: bool,
        mut stop: watch::Receiver<bool>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let service = {
            let (activity, this) = (Arc::clone(&activity), Arc::clone(&self));
            tower::service_fn(move |request: http::Request<Incoming>| {
                let running = Running::start(&activity);
                let this = Arc::clone(&this);
                async move {
                    if let Err(why) =
                        this.access
                            .check(request.uri().path(), request.headers(), client_certified)
                    {
                        return Ok::<_, Infallible>(denied(&request, why, this.name));
                    }
                    let request = request.map(|body| {
                        LimitedBody::new(body, &this.limits, Arc::clone(&this.budget), this.name)
                    });
                    let response = tower::ServiceExt::oneshot(this.handler.clone(), request).await;
                    drop(running);
                    let Ok(response) = response;
                    Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
                }
            })
        };
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(connection);
        let every = self
            .limits
            .idle_timeout
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut idle_check = tokio::time::interval(every);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(listener = self.name, %peer, error = %err, "connection ended with an error");
                    }
                    break;
                }
                _ = stop.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = idle_check.tick(), if !closing => {
                    if activity.idle_for() >= self.limits.idle_timeout {
                        closing = true;
                        metrics::record_connection(self.name, "closed_idle");
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener` (named `name` in logs and metrics) under `policy` until
/// `shutdown` completes; then stops accepting, lets each connection finish what it has in flight,
/// and returns when they are all closed.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    name: &'static str,
    handler: H,
    policy: Policy,
    shutdown: impl Future<Output = ()> + Send,
) {
    let Policy {
        limits,
        budget,
        access,
    } = policy;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(limits.body_timeout.min(Duration::from_secs(30))));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(Duration::from_secs(20));
    let shared = Arc::new(Listener {
        name,
        handler,
        limits,
        budget,
        access,
        builder,
    });
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors or a transient error: back off instead of spinning.
                tracing::warn!(listener = name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::record_connection(name, "rejected_limit");
            tracing::warn!(listener = name, %peer, limit = limits.max_connections, "too many connections; closing a new one (--max-connections)");
            drop(stream);
            continue;
        };
        metrics::record_connection(name, "accepted");
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(listener = name, error = %err, "cannot set TCP_NODELAY");
        }
        let (shared, stop) = (Arc::clone(&shared), stop_rx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            metrics::add_open_connection(name, 1.0);
            match shared.access.tls().cloned() {
                None => shared.serve_connection(stream, peer, false, stop).await,
                Some(acceptor) => {
                    let mut stopping = stop.clone();
                    let handshake = tokio::select! {
                        result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => Some(result),
                        // A connection still in its handshake has nothing in flight: close it.
                        _ = stopping.changed() => None,
                    };
                    match handshake {
                        None => {
                            tracing::debug!(listener = name, %peer, "server stopping during a TLS handshake");
                        }
                        Some(Ok(Ok(tls))) => {
                            // The verifier accepts only certificates the client CA signed.
                            let certified = tls.get_ref().1.peer_certificates().is_some();
                            shared.serve_connection(tls, peer, certified, stop).await
                        }
                        Some(Ok(Err(err))) => {
                            metrics::record_connection(name, "tls_failed");
                            tracing::debug!(listener = name, %peer, error = %err, "TLS handshake failed");
                        }
                        Some(Err(_)) => {
                            metrics::record_connection(name, "tls_failed");
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                        }
                    }
                }
            }
            metrics::add_open_connection(name, -1.0);
        });
    }
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is closed: wait until all are back.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(length: u32) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend(length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, length as usize));
        bytes
    }

    #[test]
    fn message_prefixes_are_followed_across_frames() {
        let mut limit = MessageLimit::new(10);
        let mut stream = frame(10);
        stream.extend(frame(3));
        for chunk in stream.chunks(2) {
            assert_eq!(limit.check(chunk), Ok(()));
        }
        let big = frame(11);
        let mut limit = MessageLimit::new(10);
        assert_eq!(limit.check(&big[..3]), Ok(()), "prefix not complete yet");
        assert_eq!(limit.check(&big[3..]), Err(11));
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_gets_it_back() {
        let budget = BodyBudget::new(10);
        assert!(budget.take(6));
        assert!(!budget.take(5));
        assert!(budget.take(4));
        budget.release(6);
        assert_eq!(budget.held(), 4);
        assert!(budget.take(6));
    }
}
