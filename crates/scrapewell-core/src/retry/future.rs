use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ETAG, RETRY_AFTER};
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::policy::Limits;
use super::{
    AttemptResult, Attempts, Classify, Outcome, RequestFacts, RetryError, RetryOverrides,
    RetryPolicy, RetryReason, RetryRecord, parse_retry_after,
};
use crate::{InspectBody, ProblemDetails, ReplayBody, try_clone_request};

/// What one attempt produced.
enum Attempt<R, E> {
    Response(R),
    Error(E),
    /// The request's deadline passed during the attempt.
    DeadlinePassed,
}

/// The retry loop: one logical request, attempted until an outcome other than `Retry`, the
/// attempts, the deadline or the budget end it.
pub(crate) async fn run<S, C, ReqB, ResB>(
    mut inner: S,
    policy: Arc<RetryPolicy<C>>,
    mut request: Request<ReqB>,
) -> Result<Response<ResB>, RetryError<S::Error>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    C: Classify<ResB, S::Error>,
    ReqB: ReplayBody,
    ResB: InspectBody,
{
    let limits = policy.limits(request.extensions().get::<RetryOverrides>());
    let facts = RequestFacts::of(&request);
    let deadline_at = limits.deadline.map(|deadline| Instant::now() + deadline);
    let mut attempts = Attempts::default();
    let mut schedule = None;
    if let Some(budget) = &policy.budget {
        budget.deposit();
    }
    loop {
        let attempt = attempts.begin_attempt();
        let spare = (attempt < limits.max_attempts)
            .then(|| try_clone_request(&request))
            .flatten();
        let result = send(&mut inner, request, deadline_at).await;
        let classified = match &result {
            Attempt::Response(response) => AttemptResult::Response(response),
            Attempt::Error(error) => AttemptResult::Error(error),
            Attempt::DeadlinePassed => AttemptResult::TimedOut,
        };
        let outcome = policy.classifier.classify(&facts, classified);
        let reason = match outcome {
            Outcome::Retry(reason) => reason,
            final_outcome => {
                tracing::debug!(attempt, result = %describe(&result), outcome = ?final_outcome, "attempt finished");
                return finish(final_outcome, result, &limits, attempts);
            }
        };
        if let Attempt::DeadlinePassed = result {
            return Err(deadline_exceeded(&limits, attempts));
        }
        let Some(next_request) = spare else {
            let replayable = attempt >= limits.max_attempts;
            tracing::info!(attempt, result = %describe(&result), %reason, replayable, "giving up");
            return give_up(reason, result, &limits, attempts, replayable);
        };
        let server_delay = match &result {
            Attempt::Response(response) => requested_delay(response, &limits, &attempts)?,
            _ => None,
        };
        let server_asked = server_delay.is_some();
        let delay = match server_delay {
            Some(delay) => delay,
            None => schedule
                .get_or_insert_with(|| policy.schedule())
                .next()
                .unwrap_or_default(),
        };
        if deadline_at.is_some_and(|at| Instant::now() + delay >= at) {
            tracing::info!(attempt, result = %describe(&result), %reason, delay_ms = delay.as_millis() as u64, "deadline would pass before the retry");
            return Err(deadline_exceeded(&limits, attempts));
        }
        if let Some(budget) = &policy.budget
            && !budget.withdraw()
        {
            tracing::info!(attempt, result = %describe(&result), %reason, "retry budget exhausted");
            return Err(RetryError::BudgetExhausted { reason, attempts });
        }
        tracing::info!(
            attempt,
            result = %describe(&result),
            %reason,
            delay_ms = delay.as_millis() as u64,
            delay_from = if server_asked { "retry-after" } else { "backoff" },
            "retrying"
        );
        attempts.record_retry(RetryRecord {
            attempt,
            reason,
            delay,
            server_asked,
        });
        tokio::time::sleep(delay).await;
        request = next_request;
    }
}

async fn send<S, ReqB, ResB>(
    inner: &mut S,
    request: Request<ReqB>,
    deadline_at: Option<Instant>,
) -> Attempt<Response<ResB>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    let exchange = async {
        match inner.ready().await {
            Ok(service) => service.call(request).await,
            Err(error) => Err(error),
        }
    };
    let result = match deadline_at {
        Some(deadline) => match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => return Attempt::DeadlinePassed,
        },
        None => exchange.await,
    };
    result.map_or_else(Attempt::Error, Attempt::Response)
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
    attempts: Attempts,
) -> Result<Response<ResB>, RetryError<E>> {
    match (outcome, result) {
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
                    None => response.body().inspect().map(Bytes::copy_from_slice),
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
            if attempts.count() > 1 {
                response.extensions_mut().insert(attempts);
            }
            Ok(response)
        }
        Attempt::Error(source) => Err(RetryError::Transport { source, attempts }),
        Attempt::DeadlinePassed => Err(deadline_exceeded(limits, attempts)),
    }
}

fn deadline_exceeded<E>(limits: &Limits, attempts: Attempts) -> RetryError<E> {
    RetryError::DeadlineExceeded {
        deadline: limits.deadline.unwrap_or_default(),
        attempts,
    }
}

/// The attempt's result for the log: a status, or a kind of failure. Never headers or bodies.
fn describe<R, E>(result: &Attempt<Response<R>, E>) -> String {
    match result {
        Attempt::Response(response) => response.status().as_u16().to_string(),
        Attempt::Error(_) => "transport error".to_owned(),
        Attempt::DeadlinePassed => "deadline".to_owned(),
    }
}
