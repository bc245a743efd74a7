//! One boxed future type for the layers that need one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The response future of the layers whose work spans several awaits (the retry loop, the rate
/// limiter's wait): one boxed future.
pub struct BoxedResponseFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> BoxedResponseFuture<T, E> {
    pub(crate) fn new(inner: impl Future<Output = Result<T, E>> + Send + 'static) -> Self {
        BoxedResponseFuture {
            inner: Box::pin(inner),
        }
    }
}

impl<T, E> Future for BoxedResponseFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T, E> fmt::Debug for BoxedResponseFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedResponseFuture")
            .finish_non_exhaustive()
    }
}
