use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::Turn;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit): the inner call of a request that
    /// had its turn at once, or the wait for its turn and then the call.
    pub struct ResponseFuture<F, T, E> {
        #[pin]
        state: State<F, T, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T, E> {
        /// Called at once; the turn is given back when the call completes (none for a request
        /// whose host is not limited), and its handle dropped with the future.
        Called {
            #[pin]
            call: F,
            turn: Option<Turn>,
        },
        /// Waiting for the host's turn, then calling.
        Waiting { wait: Pin<Box<dyn Future<Output = Result<T, E>> + Send>> },
    }
}

impl<F, T, E> ResponseFuture<F, T, E> {
    pub(super) fn called(call: F, turn: Option<Turn>) -> Self {
        ResponseFuture {
            state: State::Called { call, turn },
        }
    }

    pub(super) fn waiting(wait: impl Future<Output = Result<T, E>> + Send + 'static) -> Self {
        ResponseFuture {
            state: State::Waiting {
                wait: Box::pin(wait),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, http::Response<B>, E>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { call, turn } => {
                // The inner future's answer is handed on where it lies, not taken apart and
                // rebuilt: a response moved is a copy of some 150 bytes.
                let output = call.poll(cx);
                if let Poll::Ready(result) = &output
                    && let Some(turn) = turn
                {
                    turn.complete(result.as_ref().ok());
                }
                output
            }
            StateProj::Waiting { wait } => wait.as_mut().poll(cx),
        }
    }
}

impl<F, T, E> fmt::Debug for ResponseFuture<F, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting for the host's turn",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
