use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use backon::ExponentialBackoff;
use bytes::Bytes;
use http::header::{ETAG, RETRY_AFTER};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::policy::Limits;
use super::{
    AttemptResult, Attempts, Classify, Outcome, RequestFacts, RetryAttempt, RetryError,
    RetryOverrides, RetryPolicy, RetryReason, RetryRecord, TransientConflict, parse_retry_after,
};
use crate::{ErrorBody, InspectBody, ProblemDetails, ReplayBody, try_clone_request};

pin_project! {
    /// Response future of [`Retry`](super::Retry): drives every attempt of one logical
    /// request, until an outcome other than a retry, the attempts, the deadline or the budget
    /// end it.
    ///
    /// Written by hand rather than as an `async` block: the request, its spare copy and the
    /// response then stay where they are between attempts instead of being moved through
    /// the state of each await, and nothing is boxed but a deadline's timer and the wait
    /// before a retry.
    pub struct ResponseFuture<S, F, C, ReqB> {
        #[pin]
        state: State<F>,
        inner: S,
        // The request, kept for the next attempt while one may follow (each attempt sends a
        // copy); gone once it was sent itself (no attempt left, or a body that cannot be
        // copied).
        request: Option<Request<ReqB>>,
        progress: Progress<C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// Waiting for the inner service to take the attempt.
        Ready,
        /// An attempt in flight.
        Calling { #[pin] future: F },
        /// Waiting before the next attempt.
        Waiting { sleep: Pin<Box<Sleep>> },
        /// The result was handed over.
        Done,
    }
}

/// What the retry loop keeps across attempts, apart from the request.
struct Progress<C> {
    policy: Arc<RetryPolicy<C>>,
    limits: Limits,
    facts: RequestFacts,
    attempts: Attempts,
    schedule: Option<ExponentialBackoff>,
    /// When the request's deadline passes; boxed, as a request with a deadline is the rarer.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// What one attempt produced.
enum Attempt<R, E> {
    Response(R),
    Error(E),
    /// The request's deadline passed during the attempt.
    DeadlinePassed,
}

impl<B, E> Attempt<Response<B>, E> {
    /// The attempt as a classifier sees it.
    fn view(&self) -> AttemptResult<'_, B, E> {
        match self {
            Attempt::Response(response) => AttemptResult::Response(response),
            Attempt::Error(error) => AttemptResult::Error(error),
            Attempt::DeadlinePassed => AttemptResult::TimedOut,
        }
    }
}

/// What follows an attempt. Decided with the attempt's result borrowed, so that a response
/// is moved once on its way to the caller, not through every step of the decision: a move is
/// a copy of some 240 bytes.
enum Next<E> {
    /// The result ends the request as the outcome says.
    Finish(Outcome),
    /// A retry was wanted but cannot be made: no attempt is left (`replayable`), or the
    /// body cannot be sent again.
    GiveUp {
        reason: RetryReason,
        replayable: bool,
    },
    /// The request fails with an error of the retry loop's own.
    Fail(RetryError<E>),
    /// Another attempt, after this delay.
    RetryAfter(Duration),
}

impl<S, F, C, ReqB> ResponseFuture<S, F, C, ReqB> {
    #[inline(always)]
    pub(crate) fn new(inner: S, policy: Arc<RetryPolicy<C>>, request: Request<ReqB>) -> Self {
        let limits = policy.limits(request.extensions().get::<RetryOverrides>());
        let (facts, key) = RequestFacts::with_key(&request);
        // A deadline past what the clock can count never passes.
        let deadline = limits
            .deadline
            .and_then(|deadline| Instant::now().checked_add(deadline))
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        if let Some(budget) = &policy.budget {
            budget.deposit();
        }
        let mut attempts = Attempts::keyed(key);
        attempts.begin_attempt();
        ResponseFuture {
            state: State::Ready,
            inner,
            request: Some(request),
            progress: Progress {
                policy,
                limits,
                facts,
                attempts,
                schedule: None,
                deadline,
            },
        }
    }
}

impl<S, F, C, ReqB, ResB, E> Future for ResponseFuture<S, F, C, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = E, Future = F>,
    F: Future<Output = Result<Response<ResB>, E>>,
    C: Classify<ResB, E>,
    ReqB: ReplayBody,
    ResB: InspectBody,
{
    type Output = Result<Response<ResB>, RetryError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (result, outcome) = match this.state.as_mut().project() {
                StateProj::Ready => match this.inner.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        // When another attempt may follow, a copy goes and the request stays
                        // where it is for that attempt; else (or when its body cannot be
                        // copied) the request itself goes.
                        let progress = &*this.progress;
                        let copy = match &*this.request {
                            Some(request)
                                if progress.attempts.count() < progress.limits.max_attempts =>
                            {
                                try_clone_request(request)
                            }
                            _ => None,
                        };
                        let Some(mut request) = copy.or_else(|| this.request.take()) else {
                            unreachable!("an attempt starts with its request")
                        };
                        let attempt = progress.attempts.count();
                        if attempt > 1 {
                            request.extensions_mut().insert(RetryAttempt(attempt));
                        }
                        let future = this.inner.call(request);
                        this.state.set(State::Calling { future });
                        continue;
                    }
                    Poll::Ready(Err(error)) => this.progress.classify(Attempt::Error(error)),
                    Poll::Pending if this.progress.deadline_passed(cx) => {
                        this.progress.classify(Attempt::DeadlinePassed)
                    }
                    Poll::Pending => return Poll::Pending,
                },
                StateProj::Calling { future } => match future.poll(cx) {
                    Poll::Ready(Ok(mut response)) => {
                        let outcome = this.progress.classify_response(&response);
                        // Most attempts end the request with their response as it is: it
                        // goes to the caller in one move, not through each step of the
                        // decision (a move copies some 240 bytes).
                        if matches!(outcome, Outcome::Done) {
                            this.state.set(State::Done);
                            let attempts = std::mem::take(&mut this.progress.attempts);
                            record_attempts(&mut response, attempts);
                            return Poll::Ready(Ok(response));
                        }
                        (Attempt::Response(response), outcome)
                    }
                    Poll::Ready(Err(error)) => this.progress.classify(Attempt::Error(error)),
                    Poll::Pending if this.progress.deadline_passed(cx) => {
                        this.progress.classify(Attempt::DeadlinePassed)
                    }
                    Poll::Pending => return Poll::Pending,
                },
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.progress.attempts.begin_attempt();
                    this.state.set(State::Ready);
                    continue;
                }
                StateProj::Done => panic!("retry future polled after completion"),
            };
            let spare = this.request.is_some();
            match this.progress.decide(result, outcome, spare) {
                Decision::RetryAfter(delay) if delay.is_zero() => {
                    this.progress.attempts.begin_attempt();
                    this.state.set(State::Ready);
                }
                Decision::RetryAfter(delay) => {
                    let sleep = Box::pin(tokio::time::sleep(delay));
                    this.state.set(State::Waiting { sleep });
                }
                Decision::End(output) => {
                    this.state.set(State::Done);
                    return Poll::Ready(output);
                }
            }
        }
    }
}

/// What [`Progress::decide`] settled.
enum Decision<ResB, E> {
    /// Another attempt, after this delay.
    RetryAfter(Duration),
    /// The caller's result.
    End(Result<Response<ResB>, RetryError<E>>),
}

impl<C> Progress<C> {
    /// Whether the request's deadline has passed (registering for its wake-up if not).
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }

    /// An attempt's error or timeout, with its outcome. Out of line and cold, as
    /// [`Progress::decide`].
    #[cold]
    #[inline(never)]
    fn classify<ResB, E>(
        &self,
        result: Attempt<Response<ResB>, E>,
    ) -> (Attempt<Response<ResB>, E>, Outcome)
    where
        C: Classify<ResB, E>,
    {
        let outcome = self.classify_view(result.view());
        (result, outcome)
    }

    /// A response's outcome.
    fn classify_response<ResB, E>(&self, response: &Response<ResB>) -> Outcome
    where
        C: Classify<ResB, E>,
    {
        self.classify_view(AttemptResult::<ResB, E>::Response(response))
    }

    /// An attempt's outcome, with the attempt's event when it ends the request (a retry has
    /// its own).
    fn classify_view<ResB, E>(&self, result: AttemptResult<'_, ResB, E>) -> Outcome
    where
        C: Classify<ResB, E>,
    {
        let outcome = self.policy.classifier.classify(&self.facts, result);
        if !matches!(outcome, Outcome::Retry(_)) {
            let attempt = self.attempts.count();
            tracing::debug!(attempt, result = %describe(result), ?outcome, "attempt finished");
        }
        outcome
    }

    /// What follows an attempt that did not end the request with its response as it is: a
    /// retry, or the caller's result. Out of line and cold: kept apart from the poll, the path
    /// of a request answered at once spans fewer cache lines, and a retry waits anyway.
    #[cold]
    #[inline(never)]
    fn decide<ResB, E>(
        &mut self,
        result: Attempt<Response<ResB>, E>,
        outcome: Outcome,
        spare: bool,
    ) -> Decision<ResB, E>
    where
        ResB: InspectBody,
    {
        let output = match self.after(&result, outcome, spare) {
            Next::RetryAfter(delay) => return Decision::RetryAfter(delay),
            Next::Finish(outcome) => {
                let attempts = std::mem::take(&mut self.attempts);
                finish(outcome, result, &self.limits, attempts)
            }
            Next::GiveUp { reason, replayable } => {
                let attempts = std::mem::take(&mut self.attempts);
                give_up(reason, result, &self.limits, attempts, replayable)
            }
            Next::Fail(error) => Err(error),
        };
        Decision::End(output)
    }

    /// Decides what follows an attempt from its outcome; `spare` says whether a copy of the
    /// request is there to send again.
    fn after<ResB, E>(
        &mut self,
        result: &Attempt<Response<ResB>, E>,
        outcome: Outcome,
        spare: bool,
    ) -> Next<E>
    where
        ResB: InspectBody,
    {
        let attempt = self.attempts.count();
        let limits = &self.limits;
        let reason = match outcome {
            Outcome::Retry(reason) => reason,
            final_outcome => return Next::Finish(final_outcome),
        };
        if let Attempt::DeadlinePassed = result {
            let attempts = std::mem::take(&mut self.attempts);
            return Next::Fail(deadline_exceeded(limits, attempts));
        }
        if !spare {
            let replayable = attempt >= limits.max_attempts;
            tracing::info!(attempt, result = %describe(result.view()), %reason, replayable, "giving up");
            return Next::GiveUp { reason, replayable };
        }
        let server_delay = match result {
            Attempt::Response(response) => {
                match requested_delay(response, limits, &self.attempts) {
                    Ok(delay) => delay,
                    Err(error) => return Next::Fail(error),
                }
            }
            _ => None,
        };
        let server_asked = server_delay.is_some();
        let (delay, delay_from) = match server_delay {
            Some(delay) => (delay, "retry-after"),
            // Nothing of a refused request was processed, and after a graceful GOAWAY it goes
            // out on a new connection: the first refusal is retried at once. A second one backs
            // off, as the server may be at its limit of streams.
            None if reason == RetryReason::Refused
                && !self
                    .attempts
                    .retries()
                    .iter()
                    .any(|retry| retry.reason == RetryReason::Refused) =>
            {
                (Duration::ZERO, "at once")
            }
            None => {
                let schedule = self.schedule.get_or_insert_with(|| self.policy.schedule());
                (schedule.next().unwrap_or_default(), "backoff")
            }
        };
        if self.deadline.as_ref().is_some_and(|at| {
            Instant::now()
                .checked_add(delay)
                .is_none_or(|retry_at| retry_at >= at.deadline())
        }) {
            tracing::info!(attempt, result = %describe(result.view()), %reason, delay_ms = delay.as_millis() as u64, "deadline would pass before the retry");
            let attempts = std::mem::take(&mut self.attempts);
            return Next::Fail(deadline_exceeded(limits, attempts));
        }
        if let Some(budget) = &self.policy.budget
            && draws_on_budget(reason, &self.facts)
            && !budget.withdraw()
        {
            tracing::info!(attempt, result = %describe(result.view()), %reason, "retry budget exhausted");
            let attempts = std::mem::take(&mut self.attempts);
            return Next::Fail(RetryError::BudgetExhausted { reason, attempts });
        }
        tracing::info!(
            attempt,
            result = %describe(result.view()),
            %reason,
            delay_ms = delay.as_millis() as u64,
            delay_from,
            "retrying"
        );
        self.attempts.record_retry(RetryRecord {
            attempt,
            reason,
            delay,
            server_asked,
        });
        if matches!(reason, RetryReason::Timeout | RetryReason::Transport) {
            self.facts.earlier_attempt_unanswered = true;
        }
        Next::RetryAfter(delay)
    }
}

impl<S, F, C, ReqB> fmt::Debug for ResponseFuture<S, F, C, ReqB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready => "waiting for the service",
            State::Calling { .. } => "attempt in flight",
            State::Waiting { .. } => "waiting to retry",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.progress.attempts.count())
            .finish()
    }
}

/// Whether a retry for `reason` takes its tokens from the retry budget. Two do not, as giving
/// up on them would not spare a host in trouble, only leave the caller without the outcome of
/// a write:
/// - asking again after a 409 that says the request's idempotency key is in flight: the server
///   has the write and is answering;
/// - sending a write again (PUT, DELETE, a keyed POST or PATCH) after its attempt timed out: the
///   server may hold it, and the caller could only settle that by sending it again with the
///   same key. Such retries pace themselves, each one after a whole attempt timeout spent on
///   the host, under its in-flight bound; a GET that gives up loses nothing it cannot fetch
///   again, and a broken connection comes back at once, so those still draw.
fn draws_on_budget(reason: RetryReason, facts: &RequestFacts) -> bool {
    match reason {
        RetryReason::Conflict(TransientConflict::KeyInFlight) => false,
        RetryReason::Timeout => facts.method.is_safe(),
        _ => true,
    }
}

/// The delay the server asked for, capped; `None` when it asked for none or said it badly.
fn requested_delay<B, E>(
    response: &Response<B>,
    limits: &Limits,
    attempts: &Attempts,
) -> Result<Option<Duration>, RetryError<E>> {
    let Some(value) = response.headers().get(RETRY_AFTER) else {
        return Ok(None);
    };
    match parse_retry_after(value, SystemTime::now()) {
        Ok(requested) if requested > limits.max_retry_after => Err(RetryError::RetryAfterTooLong {
            status: response.status(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            requested,
            cap: limits.max_retry_after,
            attempts: attempts.clone(),
        }),
        Ok(requested) => Ok(Some(requested)),
        Err(malformed) => {
            tracing::debug!(%malformed, "ignoring Retry-After; using the backoff schedule");
            Ok(None)
        }
    }
}

/// The caller's result for an outcome that ends the request.
fn finish<ResB: InspectBody, E>(
    outcome: Outcome,
    result: Attempt<Response<ResB>, E>,
    limits: &Limits,
    mut attempts: Attempts,
) -> Result<Response<ResB>, RetryError<E>> {
    match (outcome, result) {
        (Outcome::HeldBack, Attempt::Error(source)) => {
            attempts.held_back();
            Err(RetryError::Transport { source, attempts })
        }
        (Outcome::Conflict(problem), Attempt::Response(response)) => Err(RetryError::Conflict {
            status: response.status(),
            problem,
            attempts,
        }),
        (Outcome::StaleVersion(problem), Attempt::Response(response)) => {
            Err(RetryError::StaleVersion {
                status: response.status(),
                etag: response.headers().get(ETAG).cloned(),
                current: match problem {
                    Some(_) => None,
                    None => response
                        .body()
                        .inspect()
                        .map(|body| ErrorBody::from(Bytes::copy_from_slice(body))),
                },
                problem,
                attempts,
            })
        }
        (Outcome::AlreadyExists, Attempt::Response(response)) => Err(RetryError::AlreadyExists {
            status: response.status(),
            etag: response.headers().get(ETAG).cloned(),
            attempts,
        }),
        (Outcome::PreconditionRequired(problem), Attempt::Response(response)) => {
            Err(RetryError::PreconditionRequired {
                status: response.status(),
                problem,
                attempts,
            })
        }
        (Outcome::Blocked(verdict), Attempt::Response(response)) => Err(RetryError::Blocked {
            status: response.status(),
            verdict,
            attempts,
        }),
        (Outcome::OutcomeUnknown, Attempt::Error(source)) => Err(RetryError::OutcomeUnknown {
            source: Some(source),
            attempts,
        }),
        (Outcome::OutcomeUnknown, Attempt::DeadlinePassed) => Err(RetryError::OutcomeUnknown {
            source: None,
            attempts,
        }),
        (_, result) => deliver(result, limits, attempts),
    }
}

/// The caller's result when a retry was wanted but no attempt is left (`replayable`), or the
/// body cannot be sent again.
fn give_up<ResB: InspectBody, E>(
    reason: RetryReason,
    result: Attempt<Response<ResB>, E>,
    limits: &Limits,
    attempts: Attempts,
    replayable: bool,
) -> Result<Response<ResB>, RetryError<E>> {
    match result {
        Attempt::Response(response) => match reason {
            RetryReason::Conflict(_) => {
                let body = response.body().inspect().unwrap_or_default();
                let problem = ProblemDetails::from_response(response.headers(), body).map(Box::new);
                Err(RetryError::Conflict {
                    status: response.status(),
                    problem,
                    attempts,
                })
            }
            RetryReason::Status(status) if is_rate_limited(&response) => {
                Err(RetryError::RateLimited {
                    status,
                    retry_after: response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| parse_retry_after(v, SystemTime::now()).ok()),
                    attempts,
                })
            }
            _ => deliver(Attempt::Response(response), limits, attempts),
        },
        Attempt::Error(source) if !replayable => {
            Err(RetryError::NotReplayable { source, attempts })
        }
        other => deliver(other, limits, attempts),
    }
}

/// A refusal for load: 429, or 503 with `Retry-After`.
fn is_rate_limited<B>(response: &Response<B>) -> bool {
    match response.status().as_u16() {
        429 => true,
        503 => response.headers().contains_key(RETRY_AFTER),
        _ => false,
    }
}

/// The attempt's own result: the response (with the attempts in its extensions when there was
/// more than one) or the error.
fn deliver<ResB, E>(
    result: Attempt<Response<ResB>, E>,
    limits: &Limits,
    attempts: Attempts,
) -> Result<Response<ResB>, RetryError<E>> {
    match result {
        Attempt::Response(mut response) => {
            record_attempts(&mut response, attempts);
            Ok(response)
        }
        Attempt::Error(source) => Err(RetryError::Transport { source, attempts }),
        Attempt::DeadlinePassed => Err(deadline_exceeded(limits, attempts)),
    }
}

/// Puts the attempts in the response's extensions when there was more than one. In place: a
/// response moved is a copy.
fn record_attempts<B>(response: &mut Response<B>, attempts: Attempts) {
    // A single attempt without a key is what a response without a record stands for.
    if attempts.count() > 1 || attempts.idempotency_key().is_some() {
        response.extensions_mut().insert(attempts);
    }
}

fn deadline_exceeded<E>(limits: &Limits, attempts: Attempts) -> RetryError<E> {
    RetryError::DeadlineExceeded {
        deadline: limits.deadline.unwrap_or_default(),
        attempts,
    }
}

/// The attempt's result for the log: a status, or a kind of failure. Never headers or bodies.
fn describe<B, E>(result: AttemptResult<'_, B, E>) -> String {
    match result {
        AttemptResult::Response(response) => response.status().as_u16().to_string(),
        AttemptResult::Error(_) => "transport error".to_owned(),
        AttemptResult::TimedOut => "deadline".to_owned(),
    }
}
