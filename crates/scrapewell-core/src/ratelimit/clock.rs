//! The host table's clock, read on every request's path.

use std::fmt;

use super::table::nanos;

/// No reading is 0, which means "never" in the table: readings count from a second before the
/// clock was made.
const OFFSET: u64 = 1_000_000_000;

/// Nanoseconds since the table was made (plus [`OFFSET`]).
///
/// In a running program the CPU's time-stamp counter, through quanta (governor's default clock),
/// calibrated against the OS's monotonic clock: a reading costs about 9 ns where the OS clock's
/// costs about 23 ns (a KVM guest with the `tsc` clocksource), which was a fifth of the
/// limiter's cost per request. quanta falls back to the OS clock where the counter is not
/// invariant.
///
/// A table made while tokio's clock is paused (its `test-util` feature: a paused clock stands
/// still, so two readings agree) follows tokio's clock instead, so that paused-time tests drive
/// the table as they drive the sleeps it asks for.
pub(crate) enum TableClock {
    Counter { clock: quanta::Clock, epoch: u64 },
    Tokio { epoch: tokio::time::Instant },
}

impl TableClock {
    pub(crate) fn new() -> TableClock {
        let reading = tokio::time::Instant::now();
        if tokio::time::Instant::now() == reading {
            TableClock::Tokio { epoch: reading }
        } else {
            let clock = quanta::Clock::new();
            TableClock::Counter {
                epoch: clock.raw(),
                clock,
            }
        }
    }

    pub(crate) fn now(&self) -> u64 {
        let elapsed = match self {
            TableClock::Counter { clock, epoch } => clock.delta_as_nanos(*epoch, clock.raw()),
            TableClock::Tokio { epoch } => nanos(epoch.elapsed()),
        };
        elapsed.saturating_add(OFFSET)
    }
}

impl fmt::Debug for TableClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableClock::Counter { .. } => "TableClock::Counter",
            TableClock::Tokio { .. } => "TableClock::Tokio",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_table_made_while_time_is_paused_follows_tokio_s_clock() {
        let clock = TableClock::new();
        assert!(matches!(clock, TableClock::Tokio { .. }), "{clock:?}");
        let before = clock.now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // tokio's timer counts whole milliseconds.
        let counted = clock.now() - before;
        assert!(
            (3_600_000_000_000..3_600_001_000_000).contains(&counted),
            "{counted} ns"
        );
    }

    #[test]
    fn a_table_made_in_real_time_counts_as_the_os_clock_does() {
        let clock = TableClock::new();
        // Each reading of the table's clock lies between two of the OS clock's, so a thread
        // preempted between readings widens the bounds rather than failing the test.
        let read = || {
            let before = std::time::Instant::now();
            let reading = clock.now();
            (before, reading, std::time::Instant::now())
        };
        let (first_before, first, first_after) = read();
        std::thread::sleep(Duration::from_millis(50));
        let (last_before, last, last_after) = read();
        let counted = Duration::from_nanos(last - first);
        let (least, most) = (last_before - first_after, last_after - first_before);
        // The pace keeps a margin of 2% below a quota: the counter must run within a fraction
        // of that of the OS clock (quanta calibrates it to within nanoseconds).
        let slack = most / 200 + Duration::from_micros(50);
        assert!(
            counted + slack >= least && counted <= most + slack,
            "{clock:?} counted {counted:?} between readings {least:?} to {most:?} apart"
        );
        assert!(least >= Duration::from_millis(50));
    }
}
