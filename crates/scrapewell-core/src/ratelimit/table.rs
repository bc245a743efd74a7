//! The per-host table: what every layer knows about a host, shared by every request to it.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::ServerLimit;
use super::clock::TableClock;
use super::headers::RESET_RESOLUTION;
use super::layer::Limiter;

const SHARDS: usize = 32;
/// The shortest window over which the rate a host accepts is measured: one second.
const WINDOW: u64 = 1_000_000_000;
/// Each shard looks for idle hosts after this many new ones.
const SWEEP_EVERY: u32 = 1024;

/// Per-host state shared by every request of a client (and its clones): the GCRA state of the
/// host's quota (governor's, stored here), when the host is paused until, the pace learned from
/// refusals and rate-limit headers, and the requests in flight.
///
/// Memory is bounded: hosts idle for [`idle_ttl`](TableSettings::idle_ttl) are evicted as new
/// ones arrive, and no more than [`max_hosts`](TableSettings::max_hosts) are kept (the least
/// recently seen go first). A host costs [`HostTable::BYTES_PER_HOST`] bytes.
///
/// The table reads the CPU's time-stamp counter (through quanta, calibrated against the OS's
/// monotonic clock) on every request: about 9 ns, where the OS clock takes 23. A table made
/// while tokio's clock is paused (`#[tokio::test(start_paused = true)]`) reads tokio's clock
/// instead, so that paused-time tests drive it; make the table (or the client) after pausing.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use scrapewell_core::ratelimit::{HostKey, HostTable, TableSettings};
///
/// let table = HostTable::new(TableSettings::default().max_hosts(10_000));
/// assert_eq!(table.len(), 0);
/// assert!(table.stats(&HostKey::new("example.com:443")).is_none());
/// # }
/// ```
pub struct HostTable {
    /// A fixed number, so that picking one needs no bounds check.
    shards: Box<[Shard; SHARDS]>,
    clock: TableClock,
    settings: TableSettings,
}

/// The limits of a [`HostTable`] and how it adapts.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use scrapewell_core::ratelimit::{HostTable, TableSettings};
///
/// // A crawler of many small sites: two requests at a time each, forgotten after a minute.
/// let settings = TableSettings::default()
///     .max_in_flight(2)
///     .idle_ttl(Duration::from_secs(60))
///     .max_hosts(1_000_000);
/// let table = HostTable::new(settings);
/// assert!(table.is_empty());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TableSettings {
    /// A host not seen for this long is forgotten (5 minutes).
    pub idle_ttl: Duration,
    /// At most this many hosts are kept (100,000).
    pub max_hosts: usize,
    /// Requests in flight per host (8); a host starts with one and gets one more place for
    /// each accepted response, up to this bound.
    pub max_in_flight: u32,
    /// The longest a server can hold a host's requests back (60 s): a pause through
    /// `Retry-After` or a reset, and the spacing its rate-limit headers or refusals lead to.
    pub max_pause: Duration,
    /// What a refusal near the host's limit leaves of the rate (0.85: a cut to half gives up
    /// more throughput than the refusals it saves).
    pub decrease: f64,
    /// Clean responses in a row before the pace creeps up again (10).
    pub clean_stretch: u32,
    /// The least the rate creeps up after each clean stretch, as a share of the rate at which
    /// the server last refused (2%).
    pub recovery: f64,
}

impl Default for TableSettings {
    fn default() -> Self {
        TableSettings {
            idle_ttl: Duration::from_secs(300),
            max_hosts: 100_000,
            max_in_flight: 8,
            max_pause: Duration::from_secs(60),
            decrease: 0.85,
            clean_stretch: 10,
            recovery: 0.02,
        }
    }
}

impl TableSettings {
    /// Forget hosts idle for this long.
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// Keep at most this many hosts.
    pub fn max_hosts(mut self, hosts: usize) -> Self {
        self.max_hosts = hosts.max(SHARDS);
        self
    }

    /// Requests in flight per host (at least 1).
    pub fn max_in_flight(mut self, requests: u32) -> Self {
        self.max_in_flight = requests.max(1);
        self
    }

    /// The longest pause a server can impose.
    pub fn max_pause(mut self, pause: Duration) -> Self {
        self.max_pause = pause;
        self
    }

    /// What a refusal leaves of the rate (between 0.1 and 0.95; NaN is 0.1).
    pub fn decrease(mut self, share: f64) -> Self {
        self.decrease = share_within(share, 0.1, 0.95);
        self
    }

    /// Clean responses before the pace creeps up, and by how much (a share of the rate of the
    /// last refusal, between 0.001 and 1; NaN is 0.001).
    pub fn recovery(mut self, clean_stretch: u32, share: f64) -> Self {
        self.clean_stretch = clean_stretch.max(1);
        self.recovery = share_within(share, 0.001, 1.0);
        self
    }
}

/// A host as the table knows it: a hash of its name (`host:port`, or whatever the key function
/// gives). Two names colliding in 64 bits share their state, which at a million hosts happens
/// with a chance of about 1 in 37 million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostKey(u64);

impl HostKey {
    /// The key of a name (what a custom key function gives, or a registrable domain).
    pub fn new(name: &str) -> HostKey {
        let mut hasher = std::hash::DefaultHasher::new();
        name.hash(&mut hasher);
        HostKey(hasher.finish())
    }

    /// The key of a host and port, the default grouping; the host's case does not matter.
    ///
    /// Eight bytes at a time, each word folded to lower case by setting bit 5 of every byte
    /// (a host's bytes are letters, digits and `-._~:[]%`, and only the letters change), then
    /// a 64-bit finalizer so that the high bits (which pick the shard) are as well mixed as
    /// the low ones: this runs on every request's path, where a hash fed a byte at a time cost
    /// more than the rest of the lookup.
    pub fn of(host: &str, port: u16) -> HostKey {
        const FOLD: u64 = 0x2020_2020_2020_2020;
        const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes = host.as_bytes();
        let mut hash = (bytes.len() as u64) << 16 | u64::from(port);
        let mix = |hash: u64, word: u64| {
            ((hash ^ (word | FOLD)).wrapping_mul(MULTIPLIER)).rotate_left(29)
        };
        // The last word is padded with zeros, which the length in the seed tells apart.
        for word in name_words(bytes) {
            hash = mix(hash, word);
        }
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^= hash >> 33;
        HostKey(hash)
    }
}

/// A host name as little-endian words, eight bytes at a time, the last one (when the length is
/// not a multiple of eight) padded with zero bytes: whole words need no length check each, and
/// the padded one is read without a copy of variable length.
pub(crate) fn name_words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let padded = (!tail.is_empty()).then(|| match bytes.last_chunk::<8>() {
        // A name of a word or more reads its last eight bytes and shifts out those already read.
        Some(last) => u64::from_le_bytes(*last) >> (8 * (8 - tail.len())),
        None => tail
            .iter()
            .rev()
            .fold(0, |word, &byte| word << 8 | u64::from(byte)),
    });
    words
        .map(|word| {
            let mut buffer = [0; 8];
            buffer.copy_from_slice(word);
            u64::from_le_bytes(buffer)
        })
        .chain(padded)
}

/// What the table knows about a host, for reports ([`RateLimit::host_stats`], whose docs have
/// an example).
///
/// [`RateLimit::host_stats`]: super::RateLimit::host_stats
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// Refusals (429, 503) seen from the host.
    pub refusals: u32,
    /// The spacing requests to the host currently keep, beyond its quota; `None` when only
    /// the quota applies.
    pub interval: Option<Duration>,
    /// How long the host stays paused; `None` when it is not.
    pub paused_for: Option<Duration>,
    /// Requests in flight.
    pub in_flight: u32,
}

/// What became of a request that asked for its turn at a host.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Admitted and counted in flight; it goes at `slot` (nanoseconds since the table's epoch),
    /// `wait` from now. `after_pause`: see [`Departure::after_pause`].
    Admitted {
        slot: u64,
        wait: Duration,
        after_pause: bool,
    },
    /// The host is paused.
    Paused(Pause),
    /// The host's quota allows the next request in this long.
    Quota(Duration),
    /// The host has its most requests in flight (or the free places are kept for retries):
    /// the request waits in `Line` to be notified when a place frees.
    Busy(Arc<Waiters>, Line),
}

/// Which waiters a request is in line with at a busy host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// Retries, which the places that free go to first.
    Retries,
    /// First attempts.
    First,
}

/// The requests waiting at a host: for a place in flight, in two lines, and for their slot in
/// the pace.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    retries: Notify,
    first: Notify,
    paced: Notify,
}

impl Waiters {
    /// Waits for a place in `line` to be passed on (or for the permit one left).
    pub(crate) async fn wait(&self, line: Line) {
        match line {
            Line::Retries => self.retries.notified().await,
            Line::First => self.first.notified().await,
        }
    }

    /// Tells one waiter of the retries' line, or else of the first attempts', that a place
    /// freed. Whoever wakes looks again: a place is never handed over, only announced.
    fn pass_on(&self, to_retry: bool) {
        if to_retry {
            self.retries.notify_one();
        } else {
            self.first.notify_one();
        }
    }

    /// Resolves when the host's pace quickens (see `HostState::resume`): a request sleeping
    /// for a slot given under the slower pace then looks again. Made before the sleep, so that
    /// a quickening during it is not missed.
    pub(crate) fn pace_quickened(&self) -> tokio::sync::futures::Notified<'_> {
        self.paced.notified()
    }
}

/// When a request left, and under which pace: what its answer is learned against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Departure {
    /// When it left: its slot, or later when its task woke late.
    pub(crate) at: u64,
    /// When its slot was given, under the pace of that moment.
    pub(crate) paced_at: u64,
    /// It was the first request to leave once a pause the server asked for was over: it went
    /// when the server said, not at the client's pace, so a refusal of it says nothing of the
    /// pace (a host down for a while would otherwise be tried ever more slowly).
    pub(crate) after_pause: bool,
}

/// A pause a server put on a host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pause {
    /// How long the host stays paused: what the server asked, held to `max_pause`.
    pub(crate) wait: Duration,
    /// How much of what the server asked is left.
    pub(crate) asked: Duration,
    /// The status of the answer that asked.
    pub(crate) status: http::StatusCode,
}

/// Why a request that waited for its slot cannot leave yet.
#[derive(Debug)]
pub(crate) enum Hold {
    /// The host was paused while it waited.
    Paused(Pause),
    /// Its slot in the host's pace is this far off.
    Paced(Duration),
}

/// Aligned to two cache lines (the pair x86 fetches together), so that threads working on
/// neighbouring shards do not take each other's lines: unpadded, a shard is 48 bytes.
#[repr(align(128))]
struct Shard {
    hosts: Mutex<ShardHosts>,
}

#[derive(Default)]
struct ShardHosts {
    map: HashMap<u64, HostState, BuildHasherDefault<Prehashed>>,
    added_since_sweep: u32,
}

impl ShardHosts {
    /// When the shard still holds `per_shard` hosts, forgets the tenth of them seen least
    /// recently (none with a request in flight).
    fn forget_least_recent(&mut self, per_shard: usize) {
        if self.map.len() >= per_shard {
            let mut seen: Vec<(u64, u64)> = self
                .map
                .iter()
                .filter(|(_, s)| s.in_flight == 0 && s.retries_waiting == 0)
                .map(|(k, s)| (s.last_seen, *k))
                .collect();
            let excess = self.map.len() + 1 - per_shard;
            let cut = (per_shard / 10).max(excess).min(seen.len());
            if cut > 0 {
                seen.select_nth_unstable(cut - 1);
                for (_, key) in &seen[..cut] {
                    self.map.remove(key);
                }
            }
        }
    }
}

/// Times are nanoseconds since the table's epoch (a second before it was made); 0 means
/// "never" / "none".
///
/// In C layout, with the fields every request touches first: with the key before them they span
/// 96 bytes, about two cache lines, and in a wide crawl each line a lookup touches is a miss.
#[derive(Debug, Default)]
#[repr(C)]
struct HostState {
    /// governor's theoretical arrival time, plus one (0: no cell yet).
    tat: u64,
    last_seen: u64,
    paused_until: u64,
    /// The spacing learned from refusals (AIMD).
    backoff: u64,
    /// The spacing of the server's declared policy (window / quota).
    declared: u64,
    /// Until when `hint` holds.
    hint_until: u64,
    /// A moving average of the spacing between admissions, and the last one.
    sent_every: u64,
    last_admit: u64,
    /// Responses the host accepted since `window_start`, to measure the rate it delivers.
    window_start: u64,
    window_accepted: u32,
    in_flight: u32,
    /// Notified when a place in flight frees or the pace quickens; made when a request first
    /// has to wait.
    waiters: Option<Arc<Waiters>>,
    // The rest is read only when the server limits or refuses.
    /// The spacing asked for by the remaining budget, until `hint_until`.
    hint: u64,
    /// The spacing at which the server last refused; the recovery step is a share of its rate.
    refused_at: u64,
    /// When the pace was last cut: refusals of requests sent before it do not cut it again.
    last_cut: u64,
    /// The spacing at which the current series of gentle cuts began (0: none).
    series_from: u64,
    /// When the pace last stepped up.
    last_step: u64,
    /// When the last request that waited for its slot left.
    last_left: u64,
    /// The spacing of the accepted requests in the last whole window.
    delivered_every: u64,
    /// The latest the server's current budget resets, as its answers bound it.
    reset_by: u64,
    /// The end of the longest pause the server asked for, of which `paused_until` is the part
    /// held to `max_pause`.
    asked_until: u64,
    window_refused: u16,
    /// Cuts of the pace since the host last accepted a request (see `resume`), counted to
    /// 65,535.
    cuts_in_a_row: u16,
    refusals: u32,
    /// Clean responses in a row, counted up to the clean stretch (see `recover`).
    clean: u16,
    /// The answers accepted and refused since the current series of gentle cuts began (see
    /// `refuses_whatever_the_pace`), counted to 255.
    series_accepted: u8,
    series_refused: u8,
    /// The units the server's last answer said remain until `reset_by`.
    budget: u32,
    /// Retries waiting for a place in flight: the next places free are theirs.
    retries_waiting: u32,
    /// Clean stretches past the plateau since the last cut.
    probes: u8,
    /// Whether the current stage (see `close_stage`) was refused with a 429.
    stage_limited: bool,
    /// Responses accepted so far, while fewer than the in-flight bound: the host's window of
    /// requests in flight opens one place with each, from one.
    opened: u16,
    /// The status of the answer that asked for the pause.
    paused_by: u16,
    /// The share of responses refused lately, of `u16::MAX`: a moving average over about 16
    /// responses, kept while a series of cuts runs or `blind_share` holds.
    share: u16,
    /// The share refused at half the rate where the series of cuts began, when the host refused
    /// there too (0: it did not).
    blind_share: u16,
    /// Responses accepted since the last refusal, while `blind_share` holds.
    since_refusal: u16,
    /// While refusals slow the pace, a stage of it (see `close_stage`): the learned spacing in
    /// microseconds when it began, and when the stage before it began.
    stage_backoff: u32,
    last_stage_backoff: u32,
    /// The pace in milliseconds the stage began at (0: none), and the answers since, accepted
    /// and refused.
    stage_pace: u16,
    stage_accepted: u16,
    stage_refused: u16,
    /// The share of the answers the stage before accepted, of `u16::MAX`, when a third or more
    /// were refused and enough accepted to tell (0: not so).
    last_stage_share: u16,
}

impl HostTable {
    /// What a host costs: its entry in the hash map (state, key and control byte), at the
    /// map's fullest.
    pub const BYTES_PER_HOST: usize = (std::mem::size_of::<(u64, HostState)>() + 1) * 8 / 7;

    /// An empty table.
    pub fn new(settings: TableSettings) -> HostTable {
        HostTable {
            shards: Box::new(std::array::from_fn(|_| Shard {
                hosts: Mutex::default(),
            })),
            clock: TableClock::new(),
            settings,
        }
    }

    /// Hosts currently kept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.hosts).map.len()).sum()
    }

    /// Whether no host is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memory the table's maps hold, in bytes.
    pub fn memory_bytes(&self) -> usize {
        let per_slot = std::mem::size_of::<(u64, HostState)>() + 1;
        std::mem::size_of::<Self>()
            + self
                .shards
                .iter()
                .map(|s| std::mem::size_of::<Shard>() + lock(&s.hosts).map.capacity() * per_slot)
                .sum::<usize>()
    }

    /// What the table knows about a host.
    pub fn stats(&self, key: &HostKey) -> Option<HostStats> {
        let now = self.now();
        let hosts = lock(&self.shard(key).hosts);
        let state = hosts.map.get(&key.0)?;
        let interval = state.interval(now);
        Some(HostStats {
            refusals: state.refusals,
            interval: (interval > 0).then(|| Duration::from_nanos(interval)),
            paused_for: (state.paused_until > now)
                .then(|| Duration::from_nanos(state.paused_until - now)),
            in_flight: state.in_flight,
        })
    }

    /// Forgets every host idle for longer than the idle TTL.
    pub fn evict_idle(&self) {
        let now = self.now();
        for shard in self.shards.iter() {
            self.sweep(&mut lock(&shard.hosts), now);
        }
    }

    /// Nanoseconds since the table's epoch (see [`TableClock`]).
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Asks for a request's turn at a host at `now`, in one look at its state: not while the
    /// host is paused or has its most requests in flight, nor before its quota allows. An
    /// admitted request is counted in flight and takes the next slot in the learned pace.
    ///
    /// `retry` is `Some` for a retry, and says whether it is counted among the host's waiting
    /// retries: a retry that finds no place is counted (until it is admitted, or
    /// [withdraws](Self::withdraw_retry)), and the places that free go to those first. A retry
    /// finishes what a request already started (a write whose answer was lost, a key still in
    /// flight): in line behind every first attempt, it would wait for all of them, and a host
    /// whose first attempts all time out would never answer one and open its window.
    pub(crate) fn admit(
        &self,
        key: &HostKey,
        now: u64,
        quota: Option<&Limiter>,
        retry: Option<&mut bool>,
    ) -> Admission {
        self.with_host(key, now, |state, settings| {
            if let Some(pause) = state.pause(now) {
                return Admission::Paused(pause);
            }
            let reserved = if retry.is_some() {
                0
            } else {
                state.retries_waiting
            };
            if state.in_flight.saturating_add(reserved) >= state.window(settings) {
                let waiters = Arc::clone(state.waiters.get_or_insert_with(Arc::default));
                return match retry {
                    Some(waiting) => {
                        if !*waiting {
                            *waiting = true;
                            state.retries_waiting += 1;
                        }
                        Admission::Busy(waiters, Line::Retries)
                    }
                    None => Admission::Busy(waiters, Line::First),
                };
            }
            // Each admission takes the slot one interval after the last one, so the pace holds
            // across concurrent requests too.
            let interval = state.interval(now);
            let slot = if state.last_admit > 0 {
                state.last_admit.saturating_add(interval).max(now)
            } else {
                now
            };
            // The quota is checked at the slot, when the request leaves: checked at its
            // admission, a request held back by the learned pace would let the next one follow
            // it at once when that pace lifts.
            if let Some(wait) = quota.and_then(|quota| quota.check(&mut state.tat, slot)) {
                return Admission::Quota(wait + Duration::from_nanos(slot - now));
            }
            state.in_flight += 1;
            if let Some(waiting) = retry
                && std::mem::take(waiting)
            {
                state.retries_waiting -= 1;
                // It may take its place well after the place freed (it waited out a quota on
                // the way), while more room came free and was announced to it alone.
                state.pass_on_room(settings);
            }
            let after_pause =
                state.follows_pause(interval.max(quota.map_or(0, Limiter::interval_nanos)));
            // The gap since the last request is the client's pace, unless a pause held it.
            if state.last_admit > 0 && !after_pause {
                let gap = slot.saturating_sub(state.last_admit);
                state.sent_every = if state.sent_every == 0 {
                    gap
                } else {
                    (state.sent_every * 7 + gap) / 8
                };
            }
            state.last_admit = slot;
            Admission::Admitted {
                slot,
                wait: Duration::from_nanos(slot - now),
                after_pause,
            }
        })
    }

    /// A retry counted among the host's waiting ones (see [`admit`](Self::admit)) was dropped
    /// before its turn: the place kept for it goes to the next in line.
    pub(crate) fn withdraw_retry(&self, key: &HostKey) {
        self.with_host(key, self.now(), |state, settings| {
            state.retries_waiting = state.retries_waiting.saturating_sub(1);
            state.pass_on_room(settings);
        });
    }

    /// The host's waiters, made if it has none yet: a request sleeping for its slot listens to
    /// them for the pace quickening.
    pub(crate) fn waiters(&self, key: &HostKey) -> Arc<Waiters> {
        self.with_host(key, self.now(), |state, _| {
            Arc::clone(state.waiters.get_or_insert_with(Arc::default))
        })
    }

    /// The pause the host's server asked for, while it holds.
    pub(crate) fn pause(&self, key: &HostKey, now: u64) -> Option<Pause> {
        self.with_host(key, now, |state, _| state.pause(now))
    }

    /// A request that waited for its slot leaves now, which `departure` records (`Err`: what
    /// holds it back). It waits on while the host is paused (a pause that began while it
    /// waited), and a request whose slot was given (at `paced_at`) under a pace cut since then
    /// takes a new slot in the new pace, with `paced_at` moved to now: left at their old slots,
    /// the requests queued behind a refusal would each be refused in turn. A request woken
    /// later than its slot (a busy machine, a late timer) moves the host's pace on to now, so
    /// that the next one keeps its interval from when this one really left, not from the slot
    /// it missed. `quota_interval` is the spacing of the host's quota (0 when it has none),
    /// whose theoretical arrival time moves on with it.
    pub(crate) fn leave(
        &self,
        key: &HostKey,
        quota_interval: u64,
        departure: &mut Departure,
    ) -> Result<(), Hold> {
        let now = self.now();
        self.with_host(key, now, |state, _| {
            if let Some(pause) = state.pause(now) {
                return Err(Hold::Paused(pause));
            }
            let interval = state.interval(now);
            // Before it takes a new slot below, which would hide that none was given since.
            departure.after_pause |= state.follows_pause(interval.max(quota_interval));
            if departure.paced_at < state.last_cut {
                departure.paced_at = now;
                let slot = state.last_admit.saturating_add(interval).max(now);
                state.last_admit = slot;
                if slot > now {
                    return Err(Hold::Paced(Duration::from_nanos(slot - now)));
                }
            }
            // Slots were given an interval apart: behind one that left late, keep the interval
            // from when it left.
            let earliest = state.last_left.saturating_add(interval);
            if state.last_left > 0 && earliest > now {
                return Err(Hold::Paced(Duration::from_nanos(earliest - now)));
            }
            departure.at = now;
            state.last_left = now;
            state.last_admit = state.last_admit.max(now);
            state.space_quota_from(
                now.saturating_sub(timer_credit(quota_interval)),
                quota_interval,
            );
            Ok(())
        })
    }

    /// A request that left as `departure` says is done; `response` is what it got, if
    /// anything. `quota_interval` is the spacing of the host's configured quota (0 when it has
    /// none).
    pub(crate) fn complete(
        &self,
        key: &HostKey,
        departure: &Departure,
        response: Option<(http::StatusCode, &http::HeaderMap)>,
        quota_interval: u64,
    ) {
        self.with_host(key, departure.at, |state, settings| {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.opened == 0 && quota_interval > 0 {
                // Until a host has answered, its requests open connections, and the server
                // counts one when it arrives, no later than its answer: the next one keeps the
                // quota's spacing from then. Timed from its slot, the second request, on the
                // first one's connection, could arrive early by the connection's set-up.
                state.space_quota_from(self.now(), quota_interval);
            }
            let opens = response.is_some_and(|(status, _)| !is_refusal(status))
                && state.window(settings) < settings.max_in_flight;
            if opens {
                state.opened = state.opened.saturating_add(1);
            }
            if let Some(waiters) = &state.waiters {
                // A place is free (two, when the window opened): one waiter takes each, a
                // retry's first (or, if none is waiting yet, the next one to look finds the
                // permit).
                let places = 1 + u32::from(opens);
                for place in 0..places {
                    waiters.pass_on(place < state.retries_waiting);
                }
            }
            if let Some(response) = response {
                state.learn(response, departure, quota_interval, || self.now(), settings);
            }
        });
    }

    fn with_host<T>(
        &self,
        key: &HostKey,
        now: u64,
        f: impl FnOnce(&mut HostState, &TableSettings) -> T,
    ) -> T {
        let mut hosts = lock(&self.shard(key).hosts);
        if let Some(state) = hosts.map.get_mut(&key.0) {
            state.last_seen = state.last_seen.max(now);
            return f(state, &self.settings);
        }
        self.make_room(&mut hosts, now);
        let state = hosts.map.entry(key.0).or_default();
        state.last_seen = now;
        f(state, &self.settings)
    }

    /// Before a host is added: every so often, and whenever the shard is full, forget idle
    /// hosts; if it is still full, forget the least recently seen.
    fn make_room(&self, hosts: &mut ShardHosts, now: u64) {
        let per_shard = self.settings.max_hosts.div_ceil(SHARDS);
        hosts.added_since_sweep += 1;
        let full = hosts.map.len() >= per_shard;
        if hosts.added_since_sweep >= SWEEP_EVERY || full {
            self.sweep(hosts, now);
        }
        if full {
            hosts.forget_least_recent(per_shard);
            // Removals leave tombstones, and an insert that meets too many of them grows the
            // map to twice its buckets: rebuilt at the size the shard needs, it never outgrows
            // the bound.
            let mut rebuilt = HashMap::with_capacity_and_hasher(per_shard, Default::default());
            rebuilt.extend(hosts.map.drain());
            hosts.map = rebuilt;
        }
    }

    fn sweep(&self, hosts: &mut ShardHosts, now: u64) {
        let ttl = nanos(self.settings.idle_ttl);
        hosts.map.retain(|_, s| {
            s.in_flight > 0
                || s.retries_waiting > 0
                || s.paused_until > now
                || now.saturating_sub(s.last_seen) < ttl
        });
        if hosts.map.capacity() > 64 && hosts.map.capacity() > hosts.map.len() * 4 {
            hosts.map.shrink_to_fit();
        }
        hosts.added_since_sweep = 0;
    }

    fn shard(&self, key: &HostKey) -> &Shard {
        &self.shards[shard_index(key)]
    }
}

impl HostState {
    /// Announces the room there is to each line with a place in it: the retries' when a place
    /// is free and a retry waits, the first attempts' when one is free beyond those kept for
    /// retries. For where room may have gone unannounced; one announcement too many only has a
    /// waiter look again.
    fn pass_on_room(&self, settings: &TableSettings) {
        let Some(waiters) = &self.waiters else {
            return;
        };
        let free = self.window(settings).saturating_sub(self.in_flight);
        if free > 0 && self.retries_waiting > 0 {
            waiters.pass_on(true);
        }
        if free > self.retries_waiting {
            waiters.pass_on(false);
        }
    }

    /// The requests the host may have in flight: one at first, and one more with each accepted
    /// response up to the bound (as TCP's slow start, doubling every round trip). A burst of
    /// the whole bound to a host that allows one request at a time would be refused all but
    /// once before its first answer could slow the pace.
    fn window(&self, settings: &TableSettings) -> u32 {
        (u32::from(self.opened) + 1).min(settings.max_in_flight)
    }

    /// The last pause the server asked for, not the pace (`interval`, the learned one or the
    /// quota's), decides when the next request leaves: none has been given a slot since the
    /// pause, and the pace would have let one go before it ended. That request is the one the
    /// server asked for.
    fn follows_pause(&self, interval: u64) -> bool {
        self.paused_until > self.last_admit.saturating_add(interval)
    }

    /// The spacing the host is sent requests at: the learned pace, the quota's, or the
    /// client's own when it sends slower, and a millisecond at least.
    fn pace_in_force(&self, now: u64, quota_interval: u64) -> u64 {
        self.interval(now)
            .max(quota_interval)
            .max(self.sent_every)
            .max(1_000_000)
    }

    /// The spacing the learned pace asks for now, beyond the quota.
    fn interval(&self, now: u64) -> u64 {
        let hint = if now < self.hint_until { self.hint } else { 0 };
        self.backoff.max(self.declared).max(hint)
    }

    /// Learns from the response to a request that left as `departure` says; `clock` reads the
    /// time, for the responses that need it.
    fn learn(
        &mut self,
        (status, headers): (http::StatusCode, &http::HeaderMap),
        departure: &Departure,
        quota_interval: u64,
        clock: impl FnOnce() -> u64,
        settings: &TableSettings,
    ) {
        let max_pause = nanos(settings.max_pause);
        let limit = ServerLimit::announced(headers)
            .then(|| ServerLimit::from_headers(headers, std::time::SystemTime::now()))
            .flatten();
        // Most responses only count as accepted, which they do at the time they were sent: that
        // saves reading the clock again. A refusal or rate-limit headers start pauses and hints
        // that run from when they arrived.
        let now = if is_refusal(status) || limit.is_some() {
            clock()
        } else {
            departure.at
        };
        if let Some(limit) = limit {
            if let Some(declared) = limit.declared_interval() {
                self.declared = with_margin(nanos(declared)).min(max_pause);
            }
            if let (Some(remaining), Some(reset)) = (limit.remaining, limit.reset) {
                self.follow_budget(now, remaining, reset, &limit, status, max_pause);
            }
        }
        // A stage counts while refusals hold the pace back (`backoff`, read first: for a host
        // never refused, the state's last line stays untouched).
        if self.backoff > 0 && self.stage_pace > 0 {
            let answers = if is_refusal(status) {
                self.stage_limited |= status == http::StatusCode::TOO_MANY_REQUESTS;
                &mut self.stage_refused
            } else {
                &mut self.stage_accepted
            };
            *answers = answers.saturating_add(1);
        }
        if !is_refusal(status) {
            // (`backoff` first: cuts leave one, and a host never refused is not read further.)
            if self.backoff > 0 && self.cuts_in_a_row > 0 {
                self.resume(now, quota_interval, max_pause);
            }
            self.count_accepted(now);
            self.note_share(false);
            // A held stage below a limit may see no refusal at all: its answers close it.
            // (`backoff` first: a held stage has one, and a host never refused is not read
            // further.)
            if self.backoff > 0
                && self.last_stage_share > 0
                && u32::from(self.stage_accepted) + u32::from(self.stage_refused) >= STAGE_ANSWERS
            {
                let current = self.pace_in_force(now, quota_interval);
                self.close_stage(current, now, max_pause);
            }
            self.recover(quota_interval, now, settings);
            return;
        }
        self.refusals += 1;
        self.window_refused = self.window_refused.saturating_add(1);
        if let Some(delay) = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| crate::retry::parse_retry_after(v, std::time::SystemTime::now()).ok())
        {
            self.pause_as_asked(now, nanos(delay), status, max_pause);
        }
        self.note_share(true);
        // Refused for a third of this window, more than once (a client starting at 10× the
        // host's limit; one refusal early in a window, as a climb passes the limit, is no such
        // measure).
        let window_refused = u32::from(self.window_refused);
        let heavy = window_refused >= 2 && window_refused * 2 >= self.window_accepted;
        let current = self.pace_in_force(now, quota_interval);
        // A 429 says the client sent too many: it always slows the pace, and never shows that
        // the host refuses at any pace (a token bucket of 20 at 10/s, refusing little while its
        // burst lasted, was read so, and then refused two requests in five for good).
        if status != http::StatusCode::TOO_MANY_REQUESTS
            && self.refuses_whatever_the_pace(current, heavy, max_pause)
        {
            return;
        }
        if self.close_stage(current, now, max_pause) != Stage::Open {
            return;
        }
        self.clean = 0;
        // Multiplicative decrease. Refusals of requests spaced by the pace before the last cut
        // say nothing about the new pace: cut once per round trip. Nor does the refusal of the
        // request the server asked for when it paused the host.
        if departure.paced_at >= self.last_cut && !departure.after_pause {
            self.refused_at = current;
            // Heavily refused, jump to a tenth below the rate the host delivered: that rate is
            // its limit. (When the client itself sent slowly, the delivered rate is only its
            // own.) With no measure yet and as many refused as accepted, of two answers at
            // least, quarter the rate: a client told nothing starts milliseconds apart and each
            // step down costs a refusal. (A first answer refused, or two among a host's first
            // six, as one that fails a request in five gives from the first, are no such
            // sign.) Near the limit, cut the rate by `decrease`, in a series that stops at half
            // the rate it began at (see `refuses_whatever_the_pace`).
            let gentle = (current as f64 / settings.decrease) as u64;
            let refused_half = window_refused >= self.window_accepted
                && window_refused + self.window_accepted >= 2;
            let backoff = match self.delivered_every(now) {
                // Refusing everything (see `resume`): no pace helps until the host answers
                // again, when the pace it had comes back, so meanwhile each refusal takes a
                // fifth off the rate it is tried at. The first try after the host is back
                // then comes at most about a quarter of the time it was down after it (halved
                // each time, as long as it was down: 20 s after 30 s of 503s).
                _ if self.refuses_everything(current) => Some(current.saturating_mul(5) / 4),
                Some(delivered) if heavy => Some(gentle.max(delivered * 11 / 10)),
                None if refused_half => Some(current.saturating_mul(4)),
                _ => None,
            };
            let backoff = match backoff {
                Some(deep) => {
                    self.series_from = 0;
                    deep
                }
                None => {
                    if self.series_from == 0 {
                        self.series_from = current;
                        (self.series_accepted, self.series_refused) = (0, 1);
                        if self.blind_share == 0 {
                            // The share starts with the refusal that began the series.
                            self.share = SHARE_STEP;
                        }
                    }
                    gentle.min(self.series_from.saturating_mul(2))
                }
            };
            // A host that refuses everything is still tried now and then, not parked for ever.
            self.backoff = backoff.min(max_pause);
            self.cuts_in_a_row = self.cuts_in_a_row.saturating_add(1);
            // The slots given under the old pace are taken back: the next one is a new interval
            // from now.
            self.take_back_slots(now);
            self.last_step = now;
            self.probes = 0;
        }
    }

    /// Follows the stages of a pace that refusals slow, at a refusal (or at the answer that
    /// completes a held stage) when the pace in force is `current`, at `now`. Below a limit,
    /// the share of the answers accepted grows as the pace slows (twice the share at half the
    /// rate), until the refusals are light. A host that refuses a third or more whatever the
    /// pace (a backend failing one request in two with a 503) accepts the same share at every
    /// pace, and each cut to just below the rate it delivered lowers that rate in turn, towards
    /// `max_pause`.
    ///
    /// So a stage gathers [`STAGE_ANSWERS`] answers and lasts until the pace is half what it
    /// was when the stage began. One refused a third or more, with [`STAGE_ACCEPTED`] accepted
    /// and a quarter at least, is followed by a held stage: the pace goes to half the rate where
    /// the stage ended and stays there (no cut, no step up) while it gathers its answers. If
    /// that one accepted less than √2 times its share (judged as soon as its refusals leave no
    /// doubt), the cuts since the first began are undone, and the share refused is kept in
    /// `blind_share`, as when a series of gentle cuts shows it (see
    /// `refuses_whatever_the_pace`): a limit behind the failures still slows the client.
    #[cold]
    #[inline(never)]
    fn close_stage(&mut self, current: u64, now: u64, max_pause: u64) -> Stage {
        let pace = u16::try_from(current / 1_000_000)
            .unwrap_or(u16::MAX)
            .max(1);
        let (accepted, refused) = (
            u32::from(self.stage_accepted),
            u32::from(self.stage_refused),
        );
        let gathered = accepted + refused >= STAGE_ANSWERS;
        // A held stage is judged once its answers are in, or at the refusal that leaves it no
        // way to accept √2 times the share of the stage before it.
        let held_short = self.last_stage_share > 0
            && !self.stage_limited
            && u32::from(u16::MAX) * STAGE_ANSWERS.saturating_sub(refused) / STAGE_ANSWERS * 10
                < u32::from(self.last_stage_share) * 14;
        if self.last_stage_share > 0 && !gathered && !held_short {
            return Stage::Held;
        }
        if self.last_stage_share == 0
            && self.stage_pace > 0
            && (pace < self.stage_pace.saturating_mul(2) || !gathered)
        {
            return Stage::Open;
        }
        // A held stage that accepted less than √2 times the share of the stage before it shows
        // that a slower rate did not help: the refusals come at any pace. Its share counts
        // whatever it is (a host that fails one request in two accepted a third of a dozen
        // answers), unless a 429 said the client sent too many. Nor is a share refused
        // clearly above the one the host was already seen to refuse at any pace: the cuts
        // undone let the pace past a limit, whose share grows with it (a backend failing one
        // in three behind a token bucket, all bare 503s, read so over and over, ran unpaced).
        if self.last_stage_share > 0 && !self.stage_limited {
            let share = u32::from(u16::MAX) * accepted / (accepted + refused);
            let refusing = u32::from(u16::MAX) - share;
            if share * 10 < u32::from(self.last_stage_share) * 14
                && (self.blind_share == 0 || refusing * 4 <= u32::from(self.blind_share) * 5)
            {
                self.refuses_at_any_pace(
                    u16::try_from(refusing).unwrap_or(u16::MAX),
                    u64::from(self.last_stage_backoff) * 1_000,
                );
                self.stage_pace = 0;
                self.last_stage_share = 0;
                return Stage::Undone;
            }
        }
        // A quarter accepted at least: below that the client may be far above a limit, where
        // a few answers more or less move the share by half. And no 429: a server that says
        // "too many requests" is not read as refusing whatever the pace.
        let measured = self.stage_pace > 0
            && !self.stage_limited
            && accepted >= STAGE_ACCEPTED
            && refused * 2 >= accepted
            && refused <= accepted * 3;
        let share = if measured {
            u32::from(u16::MAX) * accepted / (accepted + refused)
        } else {
            0
        };
        self.last_stage_share = u16::try_from(share).unwrap_or(u16::MAX);
        self.last_stage_backoff = self.stage_backoff;
        self.stage_pace = pace;
        self.stage_backoff = u32::try_from(self.backoff / 1_000).unwrap_or(u32::MAX);
        self.stage_accepted = 0;
        self.stage_refused = 0;
        self.stage_limited = false;
        if share == 0 {
            return Stage::Open;
        }
        // The stage ended at a refusal, often where its pace had climbed back to a limit's edge
        // (deep cuts take it far below the limit, clean answers there bring it back up): held
        // there, a strict limit refuses every other request, as a host that fails one in two
        // does at any pace: eight at a time against a strict limit answering bare 503s
        // (nginx's default), the cuts were undone to an unpaced client, refused some 200 times
        // in 300. At half that rate a limit refuses none, or accepts twice the share if the
        // stage ended far above it (at two thirds, a token bucket of five was refused a
        // quarter, as much as before, and read so). The slots given before are taken back, as
        // a cut does.
        self.backoff = current.saturating_mul(2).min(max_pause).max(self.backoff);
        self.take_back_slots(now);
        Stage::Held
    }

    /// Whether a refusal, when the pace in force is `current`, is one of those the host
    /// answers at any pace (a backend that fails now and then with a 503), which must not cut
    /// the pace: cut at each, the pace of such a host would fall towards a request a minute.
    /// A refusal that shows it records the share refused, in `blind_share`, and undoes the
    /// cuts of the series: they were made for refusals that come at any pace. The pace given
    /// back is held to `max_pause`, as every pace learned from refusals is.
    ///
    /// A rate limit that refuses less than a third of the requests at some rate accepts all
    /// of them at two thirds of it (a token bucket; a strict spacing refuses every other
    /// request or none). So a series of gentle cuts ends at half the rate it began at, and a
    /// light refusal there shows that the host refuses whatever the pace: light in the window
    /// (under a third refused), and in the series' own answers, at least as many accepted as
    /// refused. (The window alone counts a token bucket's burst, accepted before the series
    /// began: the refusals that followed it looked light, and a bucket of 50 answering bare
    /// 503s was then sent requests unpaced, 488 refused in 500.) From then on, a
    /// refusal cuts only when the share refused lately clearly exceeds the share refused at
    /// that rate: a limit behind the failures still slows the client, a little later. What
    /// was learned holds until the host has answered ten times the responses it takes on
    /// average between two such refusals without one.
    fn refuses_whatever_the_pace(&mut self, current: u64, heavy: bool, max_pause: u64) -> bool {
        if self.series_from > 0
            && current >= self.series_from.saturating_mul(5) / 3
            && !heavy
            && self.series_accepted >= self.series_refused
        {
            // Back to the pace the series began at, which the next clean stretch probes past.
            let began = self.series_from;
            self.refused_at = began;
            self.refuses_at_any_pace(self.share, began.min(max_pause));
            return true;
        }
        self.blind_share > 0
            && u32::from(self.share) <= u32::from(self.blind_share) * 3 / 2 + SHARE_MARGIN
    }

    /// At the first answer a host accepts after [`CUTS_IN_A_ROW`] cuts or more: if it went on
    /// refusing once the pace was below half the rate it delivered before (the spacing of the
    /// answers it accepted over its last whole window), the refusals came whatever the pace: a
    /// host down for a while answering bare 503s, a fixed window whose budget was spent, a ban.
    /// No pace would have helped, and none is needed now: the pace goes back to a tenth below
    /// that rate, the climb's plateau to the rate itself, and the requests sleeping for slots
    /// given under the slower pace are woken to take new ones. Left as it was, the pace of the
    /// outage's last refusal held the host: 30 s of bare 503s, then one request in 30 s for a
    /// minute and more, each clean stretch probing past that pace by a few percent of it.
    fn resume(&mut self, now: u64, quota_interval: u64, max_pause: u64) {
        let refused_everything = self.refuses_everything(self.refused_at);
        self.cuts_in_a_row = 0;
        if !refused_everything {
            return;
        }
        let delivered = self.delivered_every;
        self.backoff =
            learned_spacing(delivered.saturating_mul(11) / 10, quota_interval).min(max_pause);
        self.refused_at = delivered;
        self.series_from = 0;
        self.stage_pace = 0;
        self.last_stage_share = 0;
        self.probes = 0;
        self.clean = 0;
        // The gaps of the outage are not the client's pace, nor its accepted answers a rate:
        // a new window starts with this answer.
        self.sent_every = 0;
        self.window_start = 0;
        // Slots given under the slower pace are taken back, and so are the quota's cells they
        // took, seconds ahead: the next one is a spacing from now at most.
        self.take_back_slots(now);
        if self.tat > 0 {
            // Stored plus one.
            self.tat = self
                .tat
                .min(now.saturating_add(quota_interval).saturating_add(1));
        }
        self.last_step = now;
        if let Some(waiters) = &self.waiters {
            waiters.paced.notify_waiters();
        }
    }

    /// Takes back the slots given under the pace until `now`: a request waiting for one takes a
    /// new slot in the pace in force when it wakes (see `leave`), and refusals of requests sent
    /// before now do not cut the pace again.
    fn take_back_slots(&mut self, now: u64) {
        self.last_admit = self.last_admit.min(now);
        self.last_cut = now;
    }

    /// Whether the host refuses everything, whatever the pace: cut [`CUTS_IN_A_ROW`] times in a
    /// row or more, it refused at a pace of `pace`, below half the rate it delivered before (see
    /// `resume`).
    fn refuses_everything(&self, pace: u64) -> bool {
        u32::from(self.cuts_in_a_row) >= CUTS_IN_A_ROW
            && self.delivered_every > 0
            && pace >= self.delivered_every.saturating_mul(2)
    }

    /// What a host that refuses `refused` (of `u16::MAX`) whatever the pace has shown: the
    /// share is kept in `blind_share` (refusals cut the pace again only clearly above it), and
    /// the cuts made for such refusals are undone, back to the spacing `pace`.
    fn refuses_at_any_pace(&mut self, refused: u16, pace: u64) {
        self.blind_share = refused.max(1);
        self.share = self.blind_share;
        self.since_refusal = 0;
        self.backoff = pace;
        self.series_from = 0;
    }

    /// Counts a response in the share of refusals, while a series of cuts or what it showed
    /// makes that share matter (see `refuses_whatever_the_pace`).
    fn note_share(&mut self, refused: bool) {
        if self.series_from == 0 && self.blind_share == 0 {
            return;
        }
        self.share = self.share - self.share / 16 + if refused { SHARE_STEP } else { 0 };
        if self.series_from > 0 {
            let answers = if refused {
                &mut self.series_refused
            } else {
                &mut self.series_accepted
            };
            *answers = answers.saturating_add(1);
        }
        if refused {
            self.since_refusal = 0;
        } else if self.blind_share > 0 {
            self.since_refusal = self.since_refusal.saturating_add(1);
            if u32::from(self.since_refusal) * u32::from(self.blind_share)
                >= 10 * u32::from(u16::MAX)
            {
                self.blind_share = 0;
            }
        }
    }

    /// Paces the host by the budget an answer (of `status`) at `now` announced: `remaining`
    /// units until a reset `reset` from now.
    ///
    /// A reset in whole seconds, rounded up, bounds the end of the server's window from above,
    /// and of the answers within one window the earliest bound holds: taken alone, the "1 s"
    /// of every answer within a window of a second reads as a whole second left, each time,
    /// and spreads a window's units ever thinner towards its end. An answer belongs to a new
    /// window once the last bound has passed, when it finds more units than the last one did,
    /// or when its own bound lies a whole second or more beyond the last.
    fn follow_budget(
        &mut self,
        now: u64,
        remaining: u64,
        reset: Duration,
        limit: &ServerLimit,
        status: http::StatusCode,
        max_pause: u64,
    ) {
        let bound = now.saturating_add(nanos(reset));
        let same_window = self.reset_by > now
            && remaining <= u64::from(self.budget)
            && bound < self.reset_by.saturating_add(nanos(RESET_RESOLUTION));
        let spent_here = same_window && self.budget > 0;
        let deadline = if same_window {
            self.reset_by.min(bound)
        } else {
            bound
        };
        self.reset_by = deadline;
        self.budget = u32::try_from(remaining).unwrap_or(u32::MAX);
        let left = deadline.saturating_sub(now);
        // The quota's spacing: no faster than the limit a second, whatever the window.
        let spacing = limit.quota_spacing().map_or(0, nanos);
        if let Some(spread) = left.checked_div(remaining) {
            // What remains, spread evenly until the window ends.
            self.hint = with_margin(spread.max(spacing)).min(max_pause);
            self.hint_until = deadline;
        } else if spent_here {
            // The units this window had are spent: nothing more until it ends (and at least
            // a spacing of the quota, should its end have been an epoch time rounded down).
            self.pause_as_asked(now, left.max(with_margin(spacing)), status, max_pause);
        } else if let Some(wait) = limit.exhausted_wait() {
            // None left from the first answer of a window: a wait as long as the reset is the
            // server's word; a shorter one is the quota's spacing, an estimate within the
            // reset's rounding (a server that refills one request at a time says none remain
            // after each).
            if wait == reset {
                self.pause_as_asked(now, nanos(wait), status, max_pause);
            } else {
                // The spacing of the quota paces the next requests, as a quota does (a pause
                // would release every request waiting for its end at once), for as long as the
                // reset may stand for. The next slot is one spacing after this answer at the
                // earliest: the server counted the request when it arrived, which may have
                // been well after it left (a new connection), and was no later than now.
                let wait = with_margin(nanos(wait)).min(max_pause);
                let holds = nanos(reset.max(RESET_RESOLUTION)).max(wait);
                self.hint = wait;
                self.hint_until = now.saturating_add(holds);
                self.last_admit = self.last_admit.max(now);
            }
        }
    }

    /// Counts an accepted response in the current window: a second, or as long as it takes
    /// the host to accept two requests, so that a host slower than one a second is measured
    /// too (unmeasured, each of its refusals would quarter the pace).
    fn count_accepted(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.window_start);
        if self.window_start == 0 || (elapsed >= WINDOW && self.window_accepted >= 2) {
            if self.window_start > 0 {
                self.delivered_every = elapsed / u64::from(self.window_accepted);
            }
            self.window_start = now;
            self.window_accepted = 0;
            self.window_refused = 0;
        }
        self.window_accepted += 1;
    }

    /// The spacing of the requests the host accepted lately: over the last whole window (a
    /// second of data), or before there is one, over the current window once it spans a tenth
    /// of a second and a few responses.
    fn delivered_every(&self, now: u64) -> Option<u64> {
        if self.delivered_every > 0 {
            return Some(self.delivered_every);
        }
        let elapsed = now.saturating_sub(self.window_start);
        (self.window_start > 0 && elapsed >= WINDOW / 10 && self.window_accepted >= 3)
            .then(|| elapsed / u64::from(self.window_accepted - 1))
    }

    /// Increase: after a clean stretch, the rate grows by a third of its distance to just below
    /// the rate at which the server last refused, and by at least a small share of that rate;
    /// past that plateau the steps double (as CUBIC: fast when far below, gentle near the last
    /// refusal, probing faster the longer it holds). Once the rate reaches the quota, the quota
    /// alone paces the host.
    fn recover(&mut self, quota_interval: u64, now: u64, settings: &TableSettings) {
        // A held stage keeps its pace until its answers are in (see `close_stage`).
        if self.backoff == 0 || self.last_stage_share > 0 {
            return;
        }
        self.clean = self.clean.saturating_add(1);
        let rate = 1e9 / self.backoff as f64;
        let refused_rate = 1e9 / self.refused_at.max(1) as f64;
        let plateau = 0.98 * refused_rate;
        // A stretch is a number of clean responses. Below the plateau it is also half a second
        // of them, so that a slow host climbs back from a deep cut in seconds; past it, where
        // each step probes the server's limit, only the number counts: by the clock, a host
        // that allows three requests a second would be probed every other request.
        let long_enough =
            rate < plateau && self.clean >= 2 && now.saturating_sub(self.last_step) >= WINDOW / 2;
        if u32::from(self.clean) < settings.clean_stretch.min(u16::MAX.into()) && !long_enough {
            return;
        }
        self.clean = 0;
        self.last_step = now;
        // Past the plateau, each clean stretch doubles the step (up to 32×): a refusal caused
        // by a passing hiccup must not hold the pace low for long.
        let probe = if rate >= plateau {
            self.probes = (self.probes + 1).min(5);
            f64::from(1u32 << self.probes)
        } else {
            1.0
        };
        let step = (settings.recovery * refused_rate * probe).max((plateau - rate) / 3.0);
        self.backoff = learned_spacing((1e9 / (rate + step)) as u64, quota_interval);
        if self.backoff <= self.series_from {
            self.series_from = 0;
        }
        if self.backoff == 0 {
            self.stage_pace = 0;
            self.last_stage_share = 0;
        }
    }

    /// The quota's next cell is a spacing (`quota_interval`; 0 when the host has no quota) after
    /// `at` at the earliest, as governor would have it had a request been checked then.
    fn space_quota_from(&mut self, at: u64, quota_interval: u64) {
        if quota_interval > 0 {
            // Stored plus one.
            self.tat = self
                .tat
                .max(at.saturating_add(quota_interval).saturating_add(1));
        }
    }

    /// Pauses the host from `now` for the `asked` nanoseconds an answer of `status` asked
    /// for, held to `max_pause`. What it asked is kept whole: a request need not wait out the
    /// part `max_pause` holds when the server asked for longer than it would wait.
    fn pause_as_asked(&mut self, now: u64, asked: u64, status: http::StatusCode, max_pause: u64) {
        // "Again at once" (`Retry-After: 0`, a date gone by) is no pause: the next request
        // leaves at the client's pace, and a refusal of it cuts that pace.
        if asked == 0 {
            return;
        }
        let until = now.saturating_add(asked);
        // Once a pause is over (the host was tried again), what it asked for no longer holds.
        if self.paused_until <= now || until >= self.asked_until {
            self.asked_until = until;
            self.paused_by = status.as_u16();
        }
        self.paused_until = self
            .paused_until
            .max(now.saturating_add(asked.min(max_pause)));
    }

    /// The pause in force at `now`, if any.
    fn pause(&self, now: u64) -> Option<Pause> {
        (self.paused_until > now).then(|| Pause {
            wait: Duration::from_nanos(self.paused_until - now),
            // A pause past what the clock counts was asked for longer than that: saturated.
            asked: match self.asked_until {
                u64::MAX => Duration::MAX,
                until => Duration::from_nanos(until.saturating_sub(now)),
            },
            status: http::StatusCode::from_u16(self.paused_by)
                .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
        })
    }
}

impl fmt::Debug for HostTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostTable")
            .field("hosts", &self.len())
            .field("settings", &self.settings)
            .finish()
    }
}

/// The spacing a learned `interval` keeps beyond the quota's (`quota_interval`, 0 for none):
/// none when the quota, or a millisecond, spaces requests as much already.
fn learned_spacing(interval: u64, quota_interval: u64) -> u64 {
    if interval <= quota_interval || interval < 1_000_000 {
        0
    } else {
        interval
    }
}

/// The keys are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How much slower than a server's limit a host is paced: a server whose clock counts whole
/// milliseconds (nginx's `limit_req`) must never see a request early, nor one that left on time
/// right after one whose timer woke a little late.
pub(crate) const MARGIN: f64 = 0.02;

/// How much of a request's lateness the quota's spacing forgives: tokio's timer wakes a task
/// on the millisecond after its deadline, later still on a busy machine, and each late wake
/// carried into the next spacing costs a 20/s quota 2 to 3% of its rate. Half the [`MARGIN`],
/// and no more than the timer's millisecond: two requests still leave at least the server's
/// spacing and half the margin apart.
pub(crate) fn timer_credit(interval: u64) -> u64 {
    ((interval as f64 * MARGIN / 2.0) as u64).min(1_000_000)
}

/// A spacing the server asked for, as the host is paced: [`MARGIN`] slower.
fn with_margin(spacing: u64) -> u64 {
    spacing.saturating_add((spacing as f64 * MARGIN) as u64)
}

/// Where the stages of a slowing pace stand (see [`HostState::close_stage`]).
#[derive(PartialEq, Eq)]
enum Stage {
    /// Cuts go on.
    Open,
    /// No cut while a stage gathers the answers that tell whether the last cuts helped.
    Held,
    /// They did not: the cuts are undone.
    Undone,
}

/// Answers a stage of a slowing pace needs to measure the share accepted (see
/// [`HostState::close_stage`]), and answers accepted among them: fewer say only that the host
/// accepts little, as far above a limit.
const STAGE_ANSWERS: u32 = 12;
const STAGE_ACCEPTED: u32 = 6;
/// Cuts in a row, with no answer accepted between them, after which a host that still refuses
/// below half the rate it delivered is taken to refuse everything, whatever the pace (see
/// `HostState::resume`).
const CUTS_IN_A_ROW: u32 = 4;

/// What one refusal adds to [`HostState::share`]'s moving average.
const SHARE_STEP: u16 = u16::MAX / 16;
/// How far above the share refused at any pace the share refused lately must be for a refusal
/// to cut the pace: a tenth.
const SHARE_MARGIN: u32 = u16::MAX as u32 / 10;

/// The statuses a server refuses with when a client goes too fast.
fn is_refusal(status: http::StatusCode) -> bool {
    status == http::StatusCode::TOO_MANY_REQUESTS || status == http::StatusCode::SERVICE_UNAVAILABLE
}

/// The shard of a key. The shard's map takes the low bits for the slot and the top seven for
/// the tag it compares before any key; the shard comes from bits in between, so that within a
/// shard neither is constant (a tag shared by every host of a shard would make each lookup
/// compare keys, a cache miss each, until it finds the host).
fn shard_index(key: &HostKey) -> usize {
    (key.0 >> 32) as usize % SHARDS
}

/// `share` brought within `low..=high`, NaN to `low`: `f64::clamp` would keep a NaN, which
/// poisons every figure computed from it (and panics in `Duration::mul_f64`).
pub(crate) fn share_within(share: f64, low: f64, high: f64) -> f64 {
    if share.is_nan() {
        low
    } else {
        share.clamp(low, high)
    }
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    // In u64 arithmetic: `as_nanos` is a u128, and this runs on every request's path.
    duration
        .as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(duration.subsec_nanos())))
        .unwrap_or(u64::MAX)
}

/// A panic while holding a shard leaves state that is still worth using.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn host_keys_ignore_case_and_tell_hosts_and_ports_apart() {
        assert_eq!(
            HostKey::of("WWW.Example.COM", 443),
            HostKey::of("www.example.com", 443)
        );
        assert_ne!(
            HostKey::of("example.com", 443),
            HostKey::of("example.com", 80)
        );
        // Names that share their first word, differ only in length, or only past a word.
        let names = [
            "example.com",
            "example.co",
            "example.comx",
            "exampleA.com",
            "example1.com",
            "a",
            "ab",
            "[::1]",
            "127.0.0.1",
            "127.0.0.10",
            "a-very-long-host-name.example.com",
            "a-very-long-host-name.example.org",
        ];
        let keys: HashSet<HostKey> = names.iter().map(|n| HostKey::of(n, 443)).collect();
        assert_eq!(keys.len(), names.len());
    }

    #[test]
    fn host_keys_spread_over_every_shard() {
        let mut per_shard = [0u32; SHARDS];
        for n in 0..32_000 {
            let key = HostKey::of(&format!("host-{n}.test"), 443);
            per_shard[shard_index(&key)] += 1;
        }
        // 1,000 a shard on average; a hash that left bits unmixed would starve some.
        assert!(
            per_shard.iter().all(|&n| (800..1200).contains(&n)),
            "{per_shard:?}"
        );
    }
}
