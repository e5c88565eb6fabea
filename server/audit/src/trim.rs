//! Keeps a file device's log out of the page cache: finished stretches of the file are
//! handed to the disk and dropped from memory by a thread of their own, off the request path.
//!
//! Why: an audit log is written once and read rarely, yet every appended page stays cached
//! until memory runs short. Each append then takes a page that has never been used, and on a
//! virtual machine whose host backs guest memory lazily (free-page reporting, balloons: the
//! micro-VMs this server is benchmarked on) the first touch of such a page faults into the
//! host. Measured here: 2.6 KB appends cost about 3 µs while the kernel recycled freed pages
//! and about 12 µs once it was handing out fresh ones — more than the rest of what auditing a
//! read costs. Dropping the written stretches keeps the kernel recycling the same pages, and
//! keeps a busy log from crowding useful data out of the cache on any machine.
//!
//! `posix_fadvise(POSIX_FADV_DONTNEED)` starts writeback of the dirty pages in its range
//! (without waiting) and drops the clean ones; pages still being written stay and are dropped
//! by a later call, whose range starts at the beginning of the file again. It changes no byte
//! of the file and costs the request path a `dup` and a channel send per stretch. On tmpfs
//! (whose pages are the file) and ZFS (which caches in its own ARC) it changes nothing.

use std::fs::File;
use std::num::NonZeroU64;
use std::sync::mpsc::{Receiver, SyncSender};

/// How much the log grows between two trims (about 1,600 audited reads).
pub(crate) const TRIM_STRETCH: u64 = 4 << 20;

/// A device's end of its trimming thread.
#[derive(Debug)]
pub(crate) struct Trimmer {
    jobs: SyncSender<(File, NonZeroU64)>,
    stretch: u64,
    /// The file length at which the next trim is due.
    next_at: u64,
    /// The open file is a regular file (a FIFO or device node has no pages to drop).
    regular: bool,
}

impl Trimmer {
    /// Starts the thread; `None` (and the log stays cached, as it would without us) if it
    /// cannot be started.
    pub(crate) fn start(name: &str, stretch: u64) -> Option<Trimmer> {
        // One job waiting at most: a later job covers an earlier one, and a disk slow to take
        // the writeback must not make duplicated descriptors (of rotated files, too) pile up.
        let (jobs, queue) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name(format!("audit-trim-{}", name.trim_end_matches('/')));
        match thread.spawn(move || run(queue, stretch)) {
            Ok(_) => Some(Trimmer { jobs, stretch, next_at: stretch, regular: true }),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start the audit log's trimming thread; its pages stay cached");
                None
            }
        }
    }

    /// Notes that `file` (just opened, or just appended to) is now `length` bytes long, and
    /// each time it has grown by another stretch hands the thread every whole stretch: the
    /// page being appended to lies after them. The last whole stretch, still dirty, has its
    /// writeback started and is dropped by the next call.
    pub(crate) fn grew(&mut self, file: &File, length: u64) {
        if !self.regular || length < self.next_at {
            return;
        }
        let stretches = length / self.stretch;
        self.next_at = (stretches + 1) * self.stretch;
        // Never 0: a length of 0 would mean the whole file, the page being written included.
        let Some(upto) = NonZeroU64::new(stretches * self.stretch) else {
            return;
        };
        // A duplicate descriptor: the device may close or reopen its own meanwhile. When the
        // queue is full this job is dropped: the next stretch's covers its range too.
        if let Ok(duplicate) = file.try_clone() {
            let _ = self.jobs.try_send((duplicate, upto));
        }
    }

    /// Starts counting again for a newly opened file of `length` bytes.
    pub(crate) fn reopened(&mut self, file: &File, length: u64, regular: bool) {
        self.regular = regular;
        self.next_at = 0;
        self.grew(file, length);
    }
}

/// Ends when the device's writer, and with it the sender, is gone.
fn run(queue: Receiver<(File, NonZeroU64)>, stretch: u64) {
    while let Ok((file, upto)) = queue.recv() {
        let Ok(size) = file.metadata().map(|meta| meta.len()) else { continue };
        let Some(upto) = within(upto, size, stretch) else { continue };
        if let Err(err) = rustix::fs::fadvise(&file, 0, Some(upto), rustix::fs::Advice::DontNeed) {
            tracing::debug!(error = %err, "could not drop written audit log pages from the page cache");
        }
    }
}

/// The part of `asked` that lies in whole stretches of a file of `size` bytes. The writer
/// counts only its own appends: after a `copytruncate` (the same file, cut to 0) its count runs
/// ahead of the file, and `asked` could reach the page being written.
fn within(asked: NonZeroU64, size: u64, stretch: u64) -> Option<NonZeroU64> {
    NonZeroU64::new(asked.get().min(size / stretch * stretch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::time::{Duration, Instant};

    /// Bytes of `path` in the page cache, from util-linux's `fincore` (reading residency
    /// directly would take `mmap` and `mincore`, which need unsafe code).
    fn cached_bytes(path: &std::path::Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux-extra; scripts/test installs it) must be on PATH");
        assert!(out.status.success(), "fincore failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("fincore prints a byte count")
    }

    #[test]
    fn written_stretches_leave_the_page_cache() {
        const STRETCH: u64 = 256 << 10;
        // Beside the sources, not in /tmp: on tmpfs the pages are the file and never leave.
        let dir = tempfile::Builder::new().prefix(".audit-trim-test").tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("audit.log");
        let mut file = std::fs::OpenOptions::new().append(true).create(true).open(&path).unwrap();
        let mut trimmer = Trimmer::start("test/", STRETCH).unwrap();
        let line = [b"x".repeat(4095), b"\n".to_vec()].concat();
        let mut length = 0;
        let mut append = |file: &mut File, trimmer: Option<&mut Trimmer>, stretches: u64| {
            let mut trimmer = trimmer;
            for _ in 0..stretches * STRETCH / line.len() as u64 {
                file.write_all(&line).unwrap();
                length += line.len() as u64;
                if let Some(trimmer) = trimmer.as_deref_mut() {
                    trimmer.grew(file, length);
                }
            }
        };
        append(&mut file, None, 4);
        // Written back now, so nothing but the trimming keeps these pages from being dropped.
        file.sync_data().unwrap();
        assert!(cached_bytes(&path) >= 4 * STRETCH, "the kernel keeps what was written in the page cache");
        // Reaching 5 stretches hands over the first 4.
        append(&mut file, Some(&mut trimmer), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cached = cached_bytes(&path);
            if cached <= STRETCH {
                break;
            }
            assert!(Instant::now() < deadline, "{cached} bytes of the log still cached; at most {STRETCH} expected");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing was lost on the way.
        assert_eq!(std::fs::read(&path).unwrap().len() as u64, 5 * STRETCH);
    }

    #[test]
    fn a_file_cut_short_beneath_the_writer_is_trimmed_only_in_whole_stretches() {
        let asked = NonZeroU64::new(400).unwrap();
        assert_eq!(within(asked, 1_000, 100), Some(asked));
        assert_eq!(within(asked, 250, 100), NonZeroU64::new(200));
        // Truncated and refilled less than a stretch: nothing, not "to the end of the file".
        assert_eq!(within(asked, 99, 100), None);
        assert_eq!(within(asked, 0, 100), None);
    }

    #[test]
    fn a_reopened_file_is_trimmed_from_its_existing_length() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("a.log")).unwrap();
        let mut trimmer = Trimmer::start("test/", 100).unwrap();
        trimmer.reopened(&file, 1_050, true);
        assert_eq!(trimmer.next_at, 1_100);
        trimmer.grew(&file, 1_099);
        assert_eq!(trimmer.next_at, 1_100);
        trimmer.grew(&file, 1_230);
        assert_eq!(trimmer.next_at, 1_300);
        trimmer.reopened(&file, 0, true);
        assert_eq!(trimmer.next_at, 100);
        // A FIFO or device node reopened at the path: nothing to trim.
        trimmer.reopened(&file, 5_000, false);
        trimmer.grew(&file, 6_000);
        assert_eq!(trimmer.next_at, 0);
    }
}
