//! A [`Team`]: the calling thread plus one helper thread that spins waiting for work, so
//! that the two can share products that take only a few microseconds each. A hand-off
//! costs about 0.1 µs; waking a sleeping thread (as a thread pool does) costs several.
//!
//! The helper is one thread for the whole process, asleep between generation calls, so
//! the scheduler settles it on its own core once (a thread spawned per call may start on
//! the caller's core and share it for the whole call). Work is *offered*, not handed over:
//! the caller posts the second half of a product, does the first half, then claims the
//! second half itself if the helper has not claimed it yet. So a helper that is busy with
//! another call, asleep or descheduled costs time, not a hang; so does a helper missing in
//! a forked child (unless the fork caught it holding its sleep lock, a window of a few
//! instructions).

use std::cell::UnsafeCell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, TryLockError};

/// A job: a closure whose borrows outlive the offer (see [`Team::split`]).
type Job = *mut (dyn FnMut() + Send + 'static);

/// The calling thread plus the helper thread.
pub struct Team {
    /// Number of jobs posted so far; job n is the n-th.
    posted: AtomicU64,
    /// The last job claimed, by the helper or by the caller: exactly one of them moves it
    /// from n - 1 to n.
    claimed: AtomicU64,
    /// The last job the helper has finished.
    finished: AtomicU64,
    /// Set when a job panicked on the helper (a bug); the caller then panics too.
    failed: AtomicBool,
    /// Set while a split is under way: a split nested in one, or made at the same time by
    /// another thread holding the same team, runs both of its parts on its own thread.
    busy: AtomicBool,
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by the caller, and only when the previous job is complete
// (run by the caller, or finished by the helper); the helper reads it only after it has
// claimed the job posted after that write. Release/acquire ordering on the counters
// orders these accesses. The closure it points to is `Send`.
unsafe impl Sync for Team {}

impl Team {
    fn new() -> Team {
        Team {
            posted: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            job: UnsafeCell::new(None),
        }
    }

    /// The helper's loop: claims and runs posted jobs while `active()` holds.
    fn serve(&self, active: impl Fn() -> bool) {
        let mut idle_spins = 0u32;
        loop {
            let posted = self.posted.load(Ordering::Acquire);
            if posted > self.claimed.load(Ordering::Acquire)
                && self
                    .claimed
                    .compare_exchange(posted - 1, posted, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                // SAFETY: we claimed job `posted`; the caller waits for `finished` before
                // its borrows end or it writes another job.
                if let Some(job) = unsafe { *self.job.get() } {
                    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*job)() }));
                    if ran.is_err() {
                        self.failed.store(true, Ordering::Release);
                    }
                }
                self.finished.store(posted, Ordering::Release);
                idle_spins = 0;
                continue;
            }
            if !active() {
                return;
            }
            idle_spins = idle_spins.saturating_add(1);
            if idle_spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                // Long idle (the caller is sampling, or waiting on Python): stop burning.
                std::thread::yield_now();
            }
        }
    }

    /// Offers `theirs` to the helper and runs `mine`; runs `theirs` too if the helper has
    /// not claimed it by then. Returns when both are done.
    fn split(&self, theirs: &mut (dyn FnMut() + Send), mine: impl FnOnce()) {
        if self.busy.swap(true, Ordering::Acquire) {
            mine();
            theirs();
            return;
        }
        // Declared before `Unsettled`, so dropped after it: the team is free again only
        // once the job is settled.
        let _free = Free(&self.busy);
        let job: *mut (dyn FnMut() + Send + '_) = &mut *theirs;
        // SAFETY: only the lifetime is erased; `settle` (also run by `Unsettled` when
        // unwinding) keeps this function from returning while the helper runs the job.
        let job: Job = unsafe { std::mem::transmute(job) };
        // SAFETY: the previous job is complete, so the helper is not reading `job`.
        unsafe { *self.job.get() = Some(job) };
        let ticket = self.posted.fetch_add(1, Ordering::Release) + 1;
        let unsettled = Unsettled { team: self, ticket };
        mine();
        std::mem::forget(unsettled);
        if self.settle(ticket) {
            theirs();
        }
        if self.failed.swap(false, Ordering::AcqRel) {
            panic!("a decode helper job panicked");
        }
    }

    /// Claims job `ticket` for the caller if the helper has not: true if the caller must
    /// now run it; otherwise waits until the helper has finished it, and returns false.
    fn settle(&self, ticket: u64) -> bool {
        if self
            .claimed
            .compare_exchange(ticket - 1, ticket, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return true;
        }
        let mut spins = 0u32;
        while self.finished.load(Ordering::Acquire) < ticket {
            spins = spins.saturating_add(1);
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // The helper was descheduled in the middle of the job: let it run.
                std::thread::yield_now();
            }
        }
        false
    }
}

/// Settles an offered job if the caller's own part unwinds: the helper must be done with
/// the job's borrows before they end.
struct Unsettled<'a> {
    team: &'a Team,
    ticket: u64,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        self.team.settle(self.ticket);
        // Already unwinding: a panic of the helper's part too must not fail a later split.
        self.team.failed.store(false, Ordering::Release);
    }
}

/// Clears a flag when dropped.
struct Free<'a>(&'a AtomicBool);

impl Drop for Free<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The process's helper thread and its team.
struct Helper {
    /// The process whose thread serves this helper.
    pid: u32,
    team: Team,
    /// Whether a call is using the helper now; it sleeps on `wake` while not.
    active: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Held by the call that uses the helper; other calls run without it.
    in_use: Mutex<()>,
}

/// How long the helper stays awake after a call, so that the next call, if it comes soon
/// (a loop of short generations), finds it ready instead of waking it (tens of µs).
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

impl Helper {
    fn run(&self) {
        loop {
            if !self.linger() {
                let mut guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
                while !self.active.load(Ordering::Acquire) {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
            }
            self.team.serve(|| self.active.load(Ordering::Acquire));
        }
    }

    /// Spins for up to [`LINGER`]; true if a call started meanwhile.
    fn linger(&self) -> bool {
        let start = std::time::Instant::now();
        loop {
            for _ in 0..256 {
                if self.active.load(Ordering::Acquire) {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= LINGER {
                return false;
            }
        }
    }

    /// This process's helper, started on first use; None if no thread could be started.
    /// A forked child has none of its parent's threads (and its copy of the parent's
    /// helper may even hold a lock that nobody will release), so it starts its own.
    fn get() -> Option<&'static Helper> {
        static HELPER: AtomicPtr<Helper> = AtomicPtr::new(std::ptr::null_mut());
        let pid = std::process::id();
        let current = HELPER.load(Ordering::Acquire);
        // SAFETY: a published helper is leaked, so it lives for the rest of the process.
        if let Some(helper) = unsafe { current.as_ref() } {
            if helper.pid == pid {
                return Some(helper);
            }
        }
        let helper: &'static Helper = Box::leak(Box::new(Helper {
            pid,
            team: Team::new(),
            active: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            in_use: Mutex::new(()),
        }));
        let fresh = helper as *const Helper as *mut Helper;
        if let Err(winner) =
            HELPER.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // Another thread started one first (ours is leaked unused, a few bytes).
            // SAFETY: as above.
            return unsafe { winner.as_ref() }.filter(|h| h.pid == pid);
        }
        std::thread::Builder::new()
            .name("tinylm-decode".into())
            .spawn(move || helper.run())
            .ok()
            .map(|_| helper)
    }
}

/// Puts the helper back to sleep however the call ends.
struct Deactivate(&'static Helper);

impl Drop for Deactivate {
    fn drop(&mut self) {
        self.0.active.store(false, Ordering::Release);
    }
}

/// Runs `f` with the helper thread awake, or with no team if another call is using it.
pub fn with_team<R>(f: impl FnOnce(Option<&Team>) -> R) -> R {
    let Some(helper) = Helper::get() else {
        return f(None);
    };
    let _in_use = match helper.in_use.try_lock() {
        Ok(guard) => guard,
        // A call panicked while using the helper; the helper itself is fine.
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return f(None),
    };
    {
        let _guard = helper.sleep.lock().unwrap_or_else(|e| e.into_inner());
        helper.active.store(true, Ordering::Release);
        helper.wake.notify_one();
    }
    let _deactivate = Deactivate(helper);
    f(Some(&helper.team))
}

/// Runs `first` and `second`: side by side with a team, one after the other without.
pub(crate) fn both(team: Option<&Team>, mut second: impl FnMut() + Send, first: impl FnOnce()) {
    match team {
        Some(team) => team.split(&mut second, first),
        None => {
            first();
            second();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Runs `f` with a team served by a scoped thread of its own.
    fn with_local_team<R>(f: impl FnOnce(&Team) -> R) -> R {
        let team = Team::new();
        let active = AtomicBool::new(true);
        std::thread::scope(|s| {
            s.spawn(|| team.serve(|| active.load(Ordering::Acquire)));
            let _stop = Free(&active);
            f(&team)
        })
    }

    #[test]
    fn every_part_runs_once_however_the_work_is_shared() {
        let (a, b) = (AtomicUsize::new(0), AtomicUsize::new(0));
        with_local_team(|team| {
            for _ in 0..10_000 {
                both(
                    Some(team),
                    || {
                        b.fetch_add(1, Ordering::Relaxed);
                    },
                    || {
                        a.fetch_add(1, Ordering::Relaxed);
                    },
                );
            }
        });
        assert_eq!((a.into_inner(), b.into_inner()), (10_000, 10_000));
    }

    #[test]
    fn nested_and_concurrent_splits_run_both_parts_and_return() {
        let count = AtomicUsize::new(0);
        let add = || {
            count.fetch_add(1, Ordering::Relaxed);
        };
        with_local_team(|team| {
            both(Some(team), add, || both(Some(team), add, add));
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..2_000 {
                            both(Some(team), add, add);
                        }
                    });
                }
            });
        });
        assert_eq!(count.into_inner(), 3 + 2 * 2_000 * 2);
    }

    #[test]
    fn a_panicking_part_fails_its_own_split_only() {
        with_local_team(|team| {
            for _ in 0..20 {
                let failed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    both(Some(team), || panic!("a bug in a job"), || {})
                }));
                assert!(failed.is_err());
                let both_panic = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    both(Some(team), || panic!("theirs"), || panic!("mine"))
                }));
                assert!(both_panic.is_err());
                let ran = AtomicUsize::new(0);
                let add = || {
                    ran.fetch_add(1, Ordering::Relaxed);
                };
                both(Some(team), add, add);
                assert_eq!(ran.into_inner(), 2);
            }
        });
    }

    #[test]
    fn the_helper_survives_a_call_that_panicked() {
        let _ = std::panic::catch_unwind(|| with_team(|_| panic!("a call fails")));
        assert!(with_team(|team| team.is_some()));
    }
}
