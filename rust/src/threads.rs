//! The thread pool every parallel kernel runs in.
//!
//! Its size comes from `set_num_threads`, else the `TINYLM_NUM_THREADS` environment
//! variable, else the number of CPUs. Results do not depend on it: every reduction sums in
//! a fixed order whatever the number of threads.
//!
//! A process forked after the pool started (Python's `multiprocessing` with the fork start
//! method, PyTorch's DataLoader workers) has none of its threads: the pool remembers the
//! process that built it, and a child builds its own on first use, leaving the parent's
//! copy alone (dropping it would signal threads that do not exist).

use std::sync::{Arc, RwLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, Result};

/// Upper bound on the pool size, against typos such as 10000.
pub const MAX_THREADS: usize = 1024;

/// The pool and the id of the process whose threads it has.
static POOL: RwLock<Option<(u32, Arc<ThreadPool>)>> = RwLock::new(None);

fn default_threads() -> usize {
    std::env::var("TINYLM_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| (1..=MAX_THREADS).contains(&n))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

fn build(n: usize) -> Result<Arc<ThreadPool>> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("tinylm-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::value(format!("cannot start {n} threads: {e}")))
}

fn pool() -> Arc<ThreadPool> {
    let pid = std::process::id();
    if let Some((owner, p)) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if *owner == pid {
            return p.clone();
        }
    }
    let mut slot = POOL.write().unwrap_or_else(|e| e.into_inner());
    match slot.take() {
        Some((owner, p)) if owner == pid => {
            *slot = Some((owner, p));
        }
        inherited => {
            // Threads of a parent process (or none): keep the threads' count, never drop.
            let n = inherited
                .as_ref()
                .map(|(_, p)| p.current_num_threads())
                .unwrap_or_else(default_threads);
            std::mem::forget(inherited);
            let fresh = build(n)
                .or_else(|_| build(1))
                .expect("a one-thread pool always starts");
            *slot = Some((pid, fresh));
        }
    }
    slot.as_ref().expect("set above").1.clone()
}

/// Sets the number of threads used by later calls.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 || n > MAX_THREADS {
        return Err(Error::value(format!(
            "the number of threads must be between 1 and {MAX_THREADS}, got {n}"
        )));
    }
    let new_pool = build(n)?;
    let old = POOL
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .replace((std::process::id(), new_pool));
    if let Some((owner, p)) = old {
        if owner != std::process::id() {
            std::mem::forget(p);
        }
    }
    Ok(())
}

/// The number of threads later calls will use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Runs `f` inside the pool, so that its parallel kernels use the pool's threads.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}
