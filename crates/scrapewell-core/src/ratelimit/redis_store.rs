//! The quotas of a fleet kept in Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::shared::{QuotaStore, QuotaStoreError, ReserveFuture, SharedQuota};

/// A [`QuotaStore`] in Redis (5 or newer): one GCRA per host, kept and advanced by a Lua script
/// in one atomic step, on the Redis server's clock, so that the clients of a fleet share each
/// host's quota whatever their own clocks say. Feature `redis`.
///
/// A host's key (`scrapewell:quota:` and the host's name, by default) expires once it no longer
/// holds anything back. The connection is made on the first request and remade after a failure;
/// a request that gets no answer within the timeout (250 ms by default) goes on under its
/// client's own quota.
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use scrapewell_core::ratelimit::{HostTable, Quota, RateLimitLayer, RedisQuotaStore};
///
/// let store = RedisQuotaStore::open("redis://127.0.0.1:6379/")
///     .unwrap()
///     .prefix("crawler:quota:")
///     .timeout(Duration::from_millis(100));
/// let layer = RateLimitLayer::new(Arc::new(HostTable::new(Default::default())))
///     .host_quota("example.com", Quota::per_second(NonZeroU32::new(10).unwrap()))
///     .unwrap()
///     .shared_quotas(Arc::new(store));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RedisQuotaStore {
    connection: Arc<Connection>,
    script: Arc<redis::Script>,
    prefix: String,
    timeout: Duration,
}

struct Connection {
    client: redis::Client,
    /// Made on the first request, inside the runtime that its reconnection task needs.
    manager: tokio::sync::OnceCell<ConnectionManager>,
}

impl RedisQuotaStore {
    /// A store at `url` (`redis://[:password@]host:port/[db]`, or `rediss://` with the TLS
    /// features of the `redis` crate); nothing is connected yet.
    pub fn open(url: &str) -> Result<Self, redis::RedisError> {
        Ok(RedisQuotaStore {
            connection: Arc::new(Connection {
                client: redis::Client::open(url)?,
                manager: tokio::sync::OnceCell::new(),
            }),
            script: Arc::new(redis::Script::new(include_str!("gcra.lua"))),
            prefix: "scrapewell:quota:".to_owned(),
            timeout: Duration::from_millis(250),
        })
    }

    /// What the keys of the hosts begin with (`scrapewell:quota:` by default): fleets that
    /// should not share budgets use prefixes of their own.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a request waits for Redis's answer, connecting included, before it goes on
    /// under its client's own quota (250 ms by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What one request asks Redis.
struct Ask {
    connection: Arc<Connection>,
    script: Arc<redis::Script>,
    key: String,
    quota: SharedQuota,
    timeout: Duration,
}

impl Ask {
    async fn send(self) -> Result<Duration, QuotaStoreError> {
        let manager = self
            .connection
            .manager
            .get_or_try_init(|| async {
                // One connection attempt at a time, no retries: a request does not wait out
                // Redis's recovery, it goes on under its client's quota.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(0);
                ConnectionManager::new_lazy_with_config(self.connection.client.clone(), config)
            })
            .await
            .map_err(unavailable)?;
        let mut connection = manager.clone();
        let mut invocation = self.script.key(&self.key);
        invocation
            .arg(micros(self.quota.interval).max(1))
            .arg(self.quota.burst.max(1));
        let wait: i64 = match invocation.invoke_async(&mut connection).await {
            // A failed connection is remade by the next command: the first request after an
            // outage tries once more, so that it does not go unshared while Redis is back.
            Err(error) if error.is_io_error() || error.is_unrecoverable_error() => {
                invocation.invoke_async(&mut connection).await
            }
            answer => answer,
        }
        .map_err(unavailable)?;
        u64::try_from(wait)
            .map(Duration::from_micros)
            .map_err(|_| QuotaStoreError::Malformed(format!("a wait of {wait} µs")))
    }
}

impl QuotaStore for RedisQuotaStore {
    fn reserve(&self, host: &str, quota: SharedQuota) -> ReserveFuture {
        let timeout = self.timeout;
        let ask = Ask {
            connection: Arc::clone(&self.connection),
            script: Arc::clone(&self.script),
            key: format!("{}{host}", self.prefix),
            quota,
            timeout,
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, ask.send()).await {
                Ok(answer) => answer,
                Err(_) => Err(QuotaStoreError::Unavailable(
                    format!("no answer from Redis within {timeout:?}").into(),
                )),
            }
        })
    }
}

fn unavailable(error: redis::RedisError) -> QuotaStoreError {
    QuotaStoreError::Unavailable(Box::new(error))
}

/// A duration in whole microseconds, as the script counts.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl fmt::Debug for RedisQuotaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address only: the URL may carry a password.
        f.debug_struct("RedisQuotaStore")
            .field(
                "addr",
                &self
                    .connection
                    .client
                    .get_connection_info()
                    .addr()
                    .to_string(),
            )
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}
