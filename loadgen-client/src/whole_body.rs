//! Requests sent whole, as one HTTP/2 DATA frame that also ends the stream. tonic streams a
//! unary request's body (the message, then its end), and hyper writes the end as an empty DATA
//! frame of its own, in a socket write of its own: three TCP segments per request (HEADERS,
//! DATA, end), each one a wake-up of the server's network thread. Collected first, the body is a
//! single chunk that knows it is the last, so a request takes two (README: "Per-request cost").

use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};

/// Wraps a gRPC channel so each request body goes as one frame.
#[derive(Debug, Clone)]
pub struct WholeBody<S> {
    inner: S,
}

impl<S> WholeBody<S> {
    /// `inner` with whole request bodies.
    pub fn new(inner: S) -> Self {
        WholeBody { inner }
    }
}

impl<S> Service<http::Request<Body>> for WholeBody<S>
where
    S: Service<http::Request<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<StdError>,
{
    type Response = S::Response;
    type Error = StdError;
    type Future = BoxFuture<S::Response, StdError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The service polled ready is the one that must take the call; a clone stays behind.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
            ready.call(request).await.map_err(Into::into)
        })
    }
}
