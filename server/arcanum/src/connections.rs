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
        if queue.len() >= self.cap.saturating_mul(2).max(64) {
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
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Guarded<S> {
    fn new(
        inner: S,
        slot: OwnedSemaphorePermit,
        standing: Arc<Standing>,
        first_byte: Duration,
        idle: Duration,
    ) -> Guarded<S> {
        Guarded { inner, _slot: slot, standing, idle, deadline: Box::pin(tokio::time::sleep(first_byte)) }
    }

    fn wrote(&mut self) {
        self.standing.answered.store(true, Ordering::Release);
        self.touch();
    }

    /// Bytes moved: the connection is not idle.
    fn touch(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
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
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if !this.standing.answered.load(Ordering::Acquire) => {
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
    fn quiet_too_long(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the connection was quiet too long")))
            }
            Poll::Pending => Poll::Pending,
        }
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
