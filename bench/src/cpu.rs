//! CPU time of processes, from `/proc/<pid>/stat` (Linux): what `replicas` charges to the
//! engines and to the PostgreSQL server per step.
//!
//! A reading of a process counts what it used itself (`utime` + `stime`, every thread) and
//! what its reaped children used (`cutime` + `cstime`). A reading of a server counts the
//! postmaster and every process it started (one backend per connection, and the
//! background workers), so a backend that exits between two readings is counted in the
//! postmaster's reaped-children figure of the second: the difference of two readings is
//! the CPU the whole server used between them.

use std::time::Duration;

use anyhow::{Context, Result};

/// CPU time of `pid` and of its children, living and reaped.
pub(crate) fn tree(pid: u32) -> Result<Duration> {
    let mut ticks = own_ticks(pid)?;
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(child) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit between the listing and the reading: it is then counted by
        // its parent's reaped figure (or was not a child at all).
        if let Ok(stat) = Stat::read(child) {
            if stat.ppid == pid {
                ticks += stat.ticks;
            }
        }
    }
    Ok(from_ticks(ticks))
}

/// The PostgreSQL server's postmaster: the first line of `postmaster.pid` in its data
/// directory.
pub(crate) fn postmaster(data_dir: &std::path::Path) -> Result<u32> {
    let path = data_dir.join("postmaster.pid");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .with_context(|| format!("{}: no pid on its first line", path.display()))
}

fn own_ticks(pid: u32) -> Result<u64> {
    Ok(Stat::read(pid)?.ticks)
}

struct Stat {
    ppid: u32,
    /// utime + stime + cutime + cstime.
    ticks: u64,
}

impl Stat {
    fn read(pid: u32) -> Result<Stat> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Stat::parse(&text).with_context(|| format!("{path}: {text:?}"))
    }

    /// `pid (comm) state ppid ...`: the command may hold spaces and parentheses, so the
    /// fields are counted from the last `)`; after it, field 1 is ppid and fields 11 to
    /// 14 are utime, stime, cutime and cstime (proc(5) numbers them 4 and 14 to 17).
    fn parse(text: &str) -> Option<Stat> {
        let fields: Vec<&str> = text
            .get(text.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(Stat {
            ppid: u32::try_from(number(1)?).ok()?,
            ticks: (11..=14).map(number).sum::<Option<u64>>()?,
        })
    }
}

/// Clock ticks as time: `getconf CLK_TCK` per second (100 on Linux unless it says else).
fn from_ticks(ticks: u64) -> Duration {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100)
    });
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_its_last_parenthesis() {
        let line = "4242 (post gres: a (b)) S 17 4242 4242 0 -1 4194560 300 0 0 0 \
                    25 7 3 1 20 0 1 0 100 1000 50";
        let stat = Stat::parse(line).expect("a stat line");
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.ticks, 25 + 7 + 3 + 1);
        assert!(Stat::parse("4242 (cut short) S 17").is_none());
    }

    #[test]
    fn the_postmaster_is_the_first_line_of_its_pid_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        assert!(postmaster(dir.path()).is_err(), "no file");
        std::fs::write(
            dir.path().join("postmaster.pid"),
            "31337\n/data\n1700000000\n",
        )
        .expect("write");
        assert_eq!(postmaster(dir.path()).expect("a pid"), 31337);
    }
}
