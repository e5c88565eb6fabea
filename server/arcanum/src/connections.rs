//! Connection limits for every listener: a cap on open connections, a deadline for a new
//! connection's first byte and for each request head, and an idle timeout, so that clients
//! which open connections and say nothing (or half a request) cannot use up the process's
//! file descriptors and lock everyone else out.
//!
//! The cap counts connections from accept to close. At the cap a new connection takes the slot
//! of the oldest connection the server has not answered anything on yet (one that opened and
//! said nothing, or half a request): that one is closed. Connections the server has answered
//! on keep their slots, so clients in the middle of their work keep being served while a
//! flood of silent connections churns through the rest; a new connection that finds no such
//! slot within a second is closed. Request heads are timed by hyper
//! (`header_read_timeout`, which on HTTP/1.1 also bounds the wait for a connection's next
//! request); the first byte and the idle timeout are timed here, below TLS, so they hold for
//! TLS handshakes and HTTP/2 too.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arcanum_config::ConnectionLimits;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a new connection at the cap waits for an evicted connection's slot.
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// File descriptors kept back from the connection cap: storage, audit files, etcd and database
/// connections, the forwarder's pool.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The connections one listener may hold, derived from its config.
#[derive(Debug, Clone)]
pub struct Guard {
    slots: Arc<Semaphore>,
    cap: usize,
    /// Connections not answered on yet, oldest first (entries of closed or answered ones are
    /// skipped, and pruned as the queue grows).
    unanswered: Arc<Mutex<VecDeque<Weak<Standing>>>>,
    first_byte: Duration,
    idle: Duration,
}

/// What the guard knows of one connection.
#[derive(Debug, Default)]
struct Standing {
    /// The server wrote to it (a response, a TLS handshake).
    answered: AtomicBool,
    /// Its slot was given to a newer connection: it closes at its next read.
    evicted: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl Guard {
    pub fn new(limits: &ConnectionLimits) -> Guard {
        let cap = limits.max_connections.map_or_else(default_cap, |cap| cap as usize);
        Guard {
            slots: Arc::new(Semaphore::new(cap)),
            cap,
            unanswered: Arc::default(),
            first_byte: limits.read_header_timeout,
            idle: limits.idle_timeout,
        }
    }

    fn register(&self, standing: &Arc<Standing>) {
        let mut queue = self.unanswered.lock().unwrap_or_else(|p| p.into_inner());
        // Pruned against the connections open now, not the cap: with short-lived connections
        // the entries of closed ones would otherwise pile up to twice the cap.
        let open = self.cap.saturating_sub(self.slots.available_permits());
        if queue.len() >= open.saturating_mul(2).max(64) {
            queue.retain(|entry| entry.upgrade().is_some_and(|s| !s.answered.load(Ordering::Acquire)));
        }
        queue.push_back(Arc::downgrade(standing));
    }

    /// Closes the oldest connection not answered on yet; whether there was one.
    fn evict_oldest_unanswered(&self) -> bool {
        let mut queue = self.unanswered.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = queue.pop_front() {
            let Some(standing) = entry.upgrade() else { continue };
            if standing.answered.load(Ordering::Acquire) || standing.evicted.swap(true, Ordering::AcqRel) {
                continue;
            }
            if let Some(waker) = standing.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                waker.wake();
            }
            return true;
        }
        false
    }
}

/// Three quarters of what the open-file limit leaves after [`RESERVED_DESCRIPTORS`].
fn default_cap() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
    (limit.saturating_sub(RESERVED_DESCRIPTORS) * 3 / 4).max(64) as usize
}

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for Guard {
    type Stream = Guarded<TcpStream>;
    type Service = S;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<(Guarded<TcpStream>, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let guard = self.clone();
        Box::pin(async move {
            let slot = match Arc::clone(&guard.slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    let slot = Arc::clone(&guard.slots).acquire_owned();
                    let waited = match guard.evict_oldest_unanswered() {
                        true => tokio::time::timeout(SLOT_WAIT, slot).await.ok().and_then(Result::ok),
                        false => None,
                    };
                    match waited {
                        Some(slot) => slot,
                        None => {
                            arcanum_metrics::global().connections_refused.inc();
                            tracing::debug!("connection cap reached; closing a new connection");
                            // Dropping the stream closes it.
                            return Err(io::Error::other("connection cap reached"));
                        }
                    }
                }
            };
            let standing = Arc::new(Standing::default());
            guard.register(&standing);
            Ok((Guarded::new(stream, slot, standing, guard.first_byte, guard.idle), service))
        })
    }
}

/// A connection holding its slot, closed (read error) once it has been quiet too long.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    standing: Arc<Standing>,
    idle: Duration,
    /// When the connection is next checked for quiet: at the first-byte deadline, then every
    /// `idle`. Not moved by each read and write (that would cost a timer update per request);
    /// a check that finds bytes moved since the last one arms the next.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Reads and writes that moved bytes, and their number at the last check.
    moved: u64,
    moved_at_check: u64,
    answered: bool,
}

impl<S> Guarded<S> {
    fn new(
        inner: S,
        slot: OwnedSemaphorePermit,
        standing: Arc<Standing>,
        first_byte: Duration,
        idle: Duration,
    ) -> Guarded<S> {
        Guarded {
            inner,
            _slot: slot,
            standing,
            idle,
            deadline: Box::pin(tokio::time::sleep(first_byte)),
            moved: 0,
            moved_at_check: 0,
            answered: false,
        }
    }

    fn wrote(&mut self) {
        if !self.answered {
            self.answered = true;
            self.standing.answered.store(true, Ordering::Release);
        }
        self.moved += 1;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.standing.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed for a newer connection")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.moved += 1;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if !this.answered => {
                // An eviction wakes it through this.
                *this.standing.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
                if this.standing.evicted.load(Ordering::Acquire) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "closed for a newer connection",
                    )));
                }
                this.quiet_too_long(cx)
            }
            Poll::Pending => this.quiet_too_long(cx),
            failed => failed,
        }
    }
}

impl<S> Guarded<S> {
    /// At each check: bytes moved since the last one, so the next check is `idle` away; none,
    /// and the connection is closed (the idle timeout holds to within one `idle`).
    fn quiet_too_long(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.deadline.as_mut().poll(cx).is_ready() {
            if self.moved == self.moved_at_check {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the connection was quiet too long")));
            }
            self.moved_at_check = self.moved;
            let next = tokio::time::Instant::now() + self.idle;
            self.deadline.as_mut().reset(next);
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's timer for request-head deadlines. Re-arming a deadline only records the new one: the
/// armed tokio timer fires at the old one, finds a later deadline and re-arms itself then, so a
/// deadline moved again and again touches the timer wheel about once per timeout period. That
/// was written for hyper re-arming one deadline per connection at every head. hyper 1.12
/// instead drops the deadline once a head is read and asks for a new one at the next, so each
/// request still makes one tokio timer: 1,705 instructions of a KV read's 46,984 (the
/// thirteenth sitting of docs/BENCHMARKS.md, where keeping spare timers for reuse was tried
/// and not kept).
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadTimer;

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LazySleep { armed: Box::pin(tokio::time::sleep_until(deadline.into())), deadline })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<LazySleep>() {
            Some(lazy) => lazy.get_mut().move_to(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// See [`HeadTimer`].
#[derive(Debug)]
struct LazySleep {
    armed: Pin<Box<tokio::time::Sleep>>,
    deadline: std::time::Instant,
}

impl LazySleep {
    fn move_to(&mut self, deadline: std::time::Instant) {
        self.deadline = deadline;
        // An earlier deadline than the armed one must be armed now; a later one waits.
        if tokio::time::Instant::from_std(deadline) < self.armed.deadline() {
            self.armed.as_mut().reset(deadline.into());
        }
    }
}

impl std::future::Future for LazySleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.armed.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let wanted = tokio::time::Instant::from_std(this.deadline);
            if this.armed.deadline() >= wanted {
                return Poll::Ready(());
            }
            this.armed.as_mut().reset(wanted);
        }
    }
}

impl hyper::rt::Sleep for LazySleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer as _;

    #[test]
    fn entries_of_closed_connections_do_not_pile_up() {
        let limits = ConnectionLimits { max_connections: Some(100_000), ..ConnectionLimits::default() };
        let guard = Guard::new(&limits);
        for _ in 0..10_000 {
            guard.register(&Arc::new(Standing::default()));
        }
        let held = guard.unanswered.lock().unwrap_or_else(|p| p.into_inner()).len();
        assert!(held <= 65, "{held} entries kept for connections that are all closed");
    }

    #[tokio::test]
    async fn a_moved_head_deadline_fires_at_the_new_time_not_the_old() {
        let ms = Duration::from_millis;
        let start = std::time::Instant::now();
        let mut sleep = HeadTimer.sleep(ms(100));
        HeadTimer.reset(&mut sleep, start + ms(400));
        tokio::time::sleep_until((start + ms(200)).into()).await;
        assert!(futures_poll(&mut sleep).is_pending(), "the old deadline passed without firing");
        (&mut sleep).await;
        assert!(start.elapsed() >= ms(400), "fired at {:?}", start.elapsed());
        // Moving it earlier than the armed one takes effect at once.
        let start = std::time::Instant::now();
        let mut sleep = HeadTimer.sleep(Duration::from_secs(30));
        HeadTimer.reset(&mut sleep, start + ms(50));
        (&mut sleep).await;
        assert!(start.elapsed() < Duration::from_secs(5), "fired at {:?}", start.elapsed());
    }

    fn futures_poll(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        let waker = std::task::Waker::noop();
        sleep.as_mut().poll(&mut Context::from_waker(waker))
    }
}
