//! Group commit: one flusher thread makes the writes of many concurrent writers durable with shared fsyncs.
//!
//! A writer first applies its change to the engine (in memory), then calls [`GroupCommit::commit`], which queues it
//! for the next flush round. The flusher takes the whole queue, flushes once, and answers every waiter of that round
//! with the same result. Because a writer only queues after its change is applied, any round that starts after it
//! queued covers the change; writers arriving while a flush is in progress ride on the following round together,
//! which is where the sharing comes from.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::StorageError;

/// Makes everything applied so far durable, or says why not.
pub(crate) type FlushFn = Box<dyn FnMut() -> Result<(), String> + Send>;

pub(crate) type Reply = oneshot::Sender<Result<(), String>>;

pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    rounds: AtomicU64,
}

#[derive(Default)]
struct State {
    waiters: Vec<Reply>,
    /// Set by the first failed flush and never cleared: after a failed fsync the kernel may already have dropped the
    /// dirty pages, so which earlier writes reached the disk is unknown and a later "successful" flush proves nothing.
    failed: Option<String>,
    shutdown: bool,
}

impl Shared {
    // The state stays consistent even if a holder panicked (every update is a single assignment or push), so
    // poisoning is ignored rather than turned into a second panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("rounds", &self.rounds())
            .field("failed", &self.shared.lock().failed)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub(crate) fn start(thread_name: &str, flush: FlushFn) -> io::Result<Self> {
        let shared =
            Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new(), rounds: AtomicU64::new(0) });
        let thread = std::thread::Builder::new().name(thread_name.to_owned()).spawn({
            let shared = Arc::clone(&shared);
            move || run(&shared, flush)
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Fails once a flush has failed, so that callers stop applying writes that could never be acknowledged.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        match &self.shared.lock().failed {
            Some(err) => Err(failed_error(err)),
            None => Ok(()),
        }
    }

    /// Resolves once everything applied to the engine before this call is durable.
    pub(crate) async fn commit(&self) -> Result<(), StorageError> {
        let reply = {
            let mut state = self.shared.lock();
            if let Some(err) = &state.failed {
                return Err(failed_error(err));
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push(tx);
            rx
        };
        self.shared.wake.notify_one();
        match reply.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(StorageError::Io(err)),
            Err(_) => Err(StorageError::Io("storage flusher stopped before confirming the write".to_owned())),
        }
    }

    /// A handle through which another thread (the sled writer) queues replies for the next round itself.
    pub(crate) fn queue(&self) -> CommitQueue {
        CommitQueue(Arc::clone(&self.shared))
    }

    /// Flush rounds attempted so far (each is one engine flush plus fsyncs).
    pub(crate) fn rounds(&self) -> u64 {
        self.shared.rounds.load(Ordering::Relaxed)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        // Joining, rather than detaching, guarantees the final flush has happened and the engine handle owned by the
        // flush function is released before drop returns, so the same path can be reopened straight away.
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("storage flusher thread panicked");
            }
        }
    }
}

/// Queues replies for the next flush round from the thread that applied their writes, so that a writer's task is
/// woken once, when its write is durable, rather than once when it is applied and again when it is flushed.
pub(crate) struct CommitQueue(Arc<Shared>);

impl CommitQueue {
    /// Queues `replies`, whose writes were applied before this call, for the next round: each gets that round's
    /// outcome (or the earlier failure at once). One wake-up of the flusher for them all.
    pub(crate) fn enqueue(&self, replies: Vec<Reply>) {
        if replies.is_empty() {
            return;
        }
        {
            let mut state = self.0.lock();
            let refusal = match (&state.failed, state.shutdown) {
                (Some(err), _) => Some(failed_error(err).to_string()),
                // Not reached while the sled backend drops its writer before its flusher; never strand a waiter.
                (None, true) => Some("storage is shutting down; the write's durability is unknown".to_owned()),
                (None, false) => None,
            };
            match refusal {
                Some(err) => {
                    drop(state);
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                    return;
                }
                None => state.waiters.extend(replies),
            }
        }
        self.0.wake.notify_one();
    }
}

fn failed_error(err: &str) -> StorageError {
    StorageError::Io(format!("an earlier flush failed, storage is read-only until restart: {err}"))
}

fn run(shared: &Shared, mut flush: FlushFn) {
    let _guard = PanicGuard(shared);
    loop {
        let round = {
            let mut state = shared.lock();
            while state.waiters.is_empty() && !state.shutdown {
                state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.waiters.is_empty() {
                break;
            }
            std::mem::take(&mut state.waiters)
        };
        let result = flush_once(shared, &mut flush);
        for waiter in round {
            // A waiter whose future was dropped no longer cares.
            let _ = waiter.send(result.clone());
        }
    }
    // Shutdown: writers that were cancelled between applying and committing left changes nobody asked to flush.
    if let Err(err) = flush_once(shared, &mut flush) {
        tracing::error!(error = %err, "final storage flush at shutdown failed");
    }
}

fn flush_once(shared: &Shared, flush: &mut FlushFn) -> Result<(), String> {
    if let Some(err) = &shared.lock().failed {
        return Err(err.clone());
    }
    shared.rounds.fetch_add(1, Ordering::Relaxed);
    let result = flush();
    if let Err(err) = &result {
        tracing::error!(error = %err, "storage flush failed; refusing further writes");
        shared.lock().failed.get_or_insert_with(|| err.clone());
    }
    result
}

/// If the flush function panics, queued and future waiters must get an error instead of waiting forever on a
/// thread that is gone.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = self.0.lock();
            state.failed.get_or_insert_with(|| "storage flusher thread panicked".to_owned());
            state.waiters.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn counting(delay: Duration, fail_from_call: usize) -> (Arc<AtomicUsize>, FlushFn) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let flush: FlushFn = Box::new(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(delay);
            if n >= fail_from_call {
                Err(format!("injected failure on call {n}"))
            } else {
                Ok(())
            }
        });
        (calls, flush)
    }

    async fn commit_concurrently(gc: &Arc<GroupCommit>, n: usize) -> Vec<Result<(), StorageError>> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let gc = Arc::clone(gc);
                tokio::spawn(async move { gc.commit().await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("commit task panicked"));
        }
        results
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_share_flushes() {
        let (calls, flush) = counting(Duration::from_millis(5), usize::MAX);
        let gc = Arc::new(GroupCommit::start("test-flush", flush).expect("start"));
        let results = commit_concurrently(&gc, 64).await;
        assert!(results.iter().all(Result::is_ok));
        let flushed = calls.load(Ordering::SeqCst);
        assert!((1..64).contains(&flushed), "{flushed} flushes for 64 commits");
        assert_eq!(gc.rounds(), flushed as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failed_flush_reaches_every_waiter_and_sticks() {
        let (calls, flush) = counting(Duration::from_millis(20), 1);
        let gc = Arc::new(GroupCommit::start("test-flush", flush).expect("start"));
        let results = commit_concurrently(&gc, 16).await;
        assert!(results.iter().all(|r| matches!(r, Err(StorageError::Io(_)))), "{results:?}");
        assert!(matches!(gc.check(), Err(StorageError::Io(_))));
        assert!(matches!(gc.commit().await, Err(StorageError::Io(_))));
        // Nothing after the failure may be reported as flushed, and nothing more is attempted.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn replies_queued_by_another_thread_get_a_rounds_outcome() {
        let (calls, flush) = counting(Duration::ZERO, 2);
        let gc = GroupCommit::start("test-flush", flush).expect("start");
        let queue = gc.queue();
        let (replies, outcomes): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel()).unzip();
        std::thread::spawn(move || queue.enqueue(replies)).join().expect("enqueue");
        for outcome in outcomes {
            assert_eq!(outcome.await.expect("an answer"), Ok(()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "three replies, one round");

        // The second round fails; replies queued after it are refused at once, without another flush.
        assert!(gc.commit().await.is_err());
        let (reply, outcome) = oneshot::channel();
        gc.queue().enqueue(vec![reply]);
        assert!(outcome.await.expect("an answer").is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn panicking_flush_fails_waiters_instead_of_hanging() {
        let flush: FlushFn = Box::new(|| panic!("injected panic"));
        let gc = GroupCommit::start("test-flush", flush).expect("start");
        assert!(matches!(gc.commit().await, Err(StorageError::Io(_))));
        let second = tokio::time::timeout(Duration::from_secs(5), gc.commit()).await;
        assert!(matches!(second, Ok(Err(StorageError::Io(_)))));
    }

    #[test]
    fn drop_flushes_and_stops_the_thread() {
        let (calls, flush) = counting(Duration::ZERO, usize::MAX);
        let gc = GroupCommit::start("test-flush", flush).expect("start");
        drop(gc);
        // The final flush ran, and the flush function (owned by the thread) has been dropped, i.e. the thread ended.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(Arc::strong_count(&calls), 1);
    }
}
