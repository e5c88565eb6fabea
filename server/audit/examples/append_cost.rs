//! What appending to an audit log costs the machine, apart from everything else the server does.
//!
//! Appends `lines` lines of `line_bytes` bytes (an audited KV v2 read writes two lines, about
//! 2,540 bytes together) to a new file, `per_write` lines per `write`, and with `trim` on drops
//! each finished 4 MiB stretch from the page cache as the file device's trim thread does
//! (`POSIX_FADV_DONTNEED` from the start of the file). It ends with an `fsync`, so the
//! writeback of what stayed dirty is counted too. It prints the process's CPU and the whole
//! machine's busy time per line (the kernel's writeback threads work outside the process).
//!
//! Usage: `append_cost <dir> <lines> <per_write> <trim: on|off> [line_bytes=2537]`

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::Instant;

/// As the file device's trim thread (`trim.rs`).
const TRIM_STRETCH: u64 = 4 << 20;

/// Clock ticks (user + system) this process has used, from `/proc/self/stat`.
fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name may hold spaces; the fields after it are plain numbers.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Clock ticks every CPU of the machine has spent busy: user, nice, system, irq and softirq
/// time (not idle, not waiting for I/O, and not steal, which the hypervisor took).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpu = stat.lines().next().expect("a cpu line");
    cpu.split_whitespace()
        .skip(1)
        .take(7)
        .enumerate()
        .filter(|(index, _)| *index != 3 && *index != 4)
        .map(|(_, ticks)| ticks.parse::<u64>().expect("a tick count"))
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: append_cost <dir> <lines> <per_write> <trim: on|off> [line_bytes=2537]");
        std::process::exit(2);
    }
    let lines: u64 = args[2].parse().expect("lines: a number");
    let per_write: usize = args[3].parse().expect("per_write: a number");
    let trim = match args[4].as_str() {
        "on" => true,
        "off" => false,
        other => panic!("trim must be on or off, not {other}"),
    };
    let line_bytes: usize = args.get(5).map_or(2537, |bytes| bytes.parse().expect("line_bytes: a number"));

    let mut line = vec![b'x'; line_bytes];
    *line.last_mut().expect("a line of at least one byte") = b'\n';
    let batch = line.repeat(per_write);
    let path = std::path::Path::new(&args[1]).join("append_cost.log");
    let _ = std::fs::remove_file(&path);
    let mut file: File = OpenOptions::new().create(true).append(true).open(&path).expect("open the log");

    let ticks_per_second = 100.0; // USER_HZ on Linux
    let (own_before, machine_before, started) = (own_ticks(), machine_busy_ticks(), Instant::now());
    let (mut length, mut trimmed, mut written) = (0u64, 0u64, 0u64);
    while written < lines {
        file.write_all(&batch).expect("append");
        length += batch.len() as u64;
        written += per_write as u64;
        if trim && length - trimmed >= TRIM_STRETCH {
            let upto = length / TRIM_STRETCH * TRIM_STRETCH;
            let upto = std::num::NonZeroU64::new(upto).expect("at least one stretch");
            rustix::fs::fadvise(&file, 0, Some(upto), rustix::fs::Advice::DontNeed).expect("fadvise");
            trimmed = upto.get();
        }
    }
    file.sync_all().expect("fsync");
    let elapsed = started.elapsed().as_secs_f64();
    let own = (own_ticks() - own_before) as f64 / ticks_per_second;
    let machine = (machine_busy_ticks() - machine_before) as f64 / ticks_per_second;
    drop(file);
    let _ = std::fs::remove_file(&path);
    println!(
        "{line_bytes}-byte lines, {per_write} per write, trim {}: {:.2} us of the process's CPU and {:.2} us of the machine's per line, {:.0} lines/s",
        args[4],
        own / written as f64 * 1e6,
        machine / written as f64 * 1e6,
        written as f64 / elapsed,
    );
}
