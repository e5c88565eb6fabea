//! The fsyncs sled 0.34 leaves out, so that an acknowledged write really is on stable storage.
//!
//! `sled::Db::flush` writes the log and then, on Linux, only calls `sync_file_range`. That neither flushes the
//! drive's volatile write cache nor persists file metadata such as the file size after the log grew, which the
//! man page itself says gives no crash guarantee. Values too large for the log go to files under `blobs/`, which sled
//! never fsyncs at all, and no directory is ever fsynced. After every sled flush this fills those gaps by relying on
//! sled's on-disk layout (`<dir>/db`, `<dir>/blobs/<lsn>`, `<dir>/snap.*`), which is fixed for sled 0.34.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub(crate) struct DiskSync {
    dir: PathBuf,
    log: File,
    /// Entries already known to be durable, so that each round only pays for what is new.
    synced_dir_entries: HashSet<OsString>,
    synced_blobs: HashSet<OsString>,
}

impl DiskSync {
    /// Must be called after sled has opened `dir`; also makes the files sled just created durable.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        // Any descriptor of the inode will do: fsync acts on the file, not on the descriptor.
        let log = File::open(dir.join("db"))?;
        let mut sync =
            Self { dir: dir.to_owned(), log, synced_dir_entries: HashSet::new(), synced_blobs: HashSet::new() };
        sync.sync()?;
        // sled may just have created the directory itself.
        sync_dir(parent_dir(dir))?;
        Ok(sync)
    }

    /// Call after `sled::Db::flush` returned.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        // Blobs before the log: a durable log record that points at a blob which is not durable is corruption on
        // recovery, the reverse is merely an orphan file sled collects.
        self.sync_blobs()?;
        self.log.sync_data()?;
        if new_entries(&self.dir, &mut self.synced_dir_entries, |_| Ok(()))? {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn sync_blobs(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let any_new = new_entries(&blobs, &mut self.synced_blobs, |path| {
            match File::open(path) {
                Ok(blob) => blob.sync_all(),
                // Garbage-collected between listing and opening: nothing left to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })?;
        if any_new {
            sync_dir(&blobs)?;
        }
        Ok(())
    }
}

/// Runs `on_new` for every entry of `dir` not in `known`, then makes `known` the current listing (dropping names
/// that disappeared, so it does not grow without bound). Returns whether anything was new.
fn new_entries(
    dir: &Path,
    known: &mut HashSet<OsString>,
    mut on_new: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut current = HashSet::with_capacity(known.len());
    let mut any_new = false;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if !known.contains(&name) {
            on_new(&entry.path())?;
            any_new = true;
        }
        current.insert(name);
    }
    *known = current;
    Ok(any_new)
}

fn parent_dir(dir: &Path) -> &Path {
    match dir.parent() {
        // A bare relative name like "data" has "" as its parent.
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        Some(_) => Path::new("."),
        // The filesystem root has no parent entry to make durable.
        None => dir,
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

// Other platforms cannot open a directory as a file; their directory metadata durability is out of our hands.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
