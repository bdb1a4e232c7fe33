//! One ordering point for a step's two output streams.
//!
//! Two pipes keep no order between them: a reader that finds both holding data cannot
//! tell which was written first. (The runner used to read each in a task of its own, up
//! to 256 KiB a read, so a step writing stdout and stderr quickly had a stderr line stored
//! hundreds of lines from where it wrote it, with the same timestamp.)
//!
//! So a step's stdout and stderr are [`step_pipe`]s (made by `crate::launch`, which starts
//! the step on them): pipes in packet mode (`O_DIRECT`:
//! each write is a packet of its own, never merged into the one before) that hold one
//! page, so one packet (a write longer than a page is several, in order). A write thus
//! finds its pipe empty and wakes the reader, and a second write to the same pipe waits
//! until the first was read. [`OrderedReader`] watches both pipes through an epoll
//! instance of its own, edge-triggered, whose ready list keeps the pipes in the order
//! their writes woke them, and reads one packet per event in that order. The lines come
//! out of it in one channel, where the agent numbers them (`seq`): this reader is the
//! one place their order is decided. That order is the order of the writes:
//! - exactly, for writes made one after the other (by one thread, or ordered by anything
//!   the kernel sees between the writers: a `wait`, a pipe); a line takes the place of the
//!   write that ended it (its `\n`);
//! - for writes made at the same moment by two threads or processes, the order in which
//!   the kernel took them (that of their wake-ups);
//! - for a step that changes its own stdout or stderr (clears `O_DIRECT` or grows the
//!   pipe with `fcntl`), the order in which reads see the writes: writes by one process to
//!   two pipes can only be ordered as their reads see them, here off by at most what that
//!   pipe then holds. Each stream's own lines stay in order whatever the step does.
//!
//! The cost: a step writes at most one page per stream ahead of the runner, which wakes
//! for every write (a line each for a shell's `echo`); a step that writes faster than the
//! runner reads waits for it, as it would on any full pipe. Nothing is dropped.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::epoll;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use super::lines::{Lines, Output, SEND_GROUP};
use crate::mask::Masker;
use plue_types::protocol::Stream;

/// One read takes one packet, at most a page: more than any page size of Linux, as a
/// packet longer than the read would lose its rest.
const READ_BYTES: usize = 256 * 1024;
/// After `stop`, data already in the pipes is still read, up to this much: only a writer
/// that keeps going is cut off.
const AFTER_STOP_BYTES: usize = 4 * 1024 * 1024;
/// How long the reader waits idle before it looks into a pipe the step grew (whose
/// packets an event may no longer announce one by one).
const GROWN_PIPE_LOOK: Duration = Duration::from_millis(100);
/// The streams, by the index of their pipe (the epoll events' data).
const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// Reads a step's two [`step_pipe`]s into one channel of lines, in the order of the
/// writes (see the module doc), until EOF on both (or `stop` with nothing ready).
pub(super) struct OrderedReader {
    epoll: AsyncFd<OwnedFd>,
    /// The read ends, stdout's then stderr's; `None` once at EOF.
    pipes: [Option<OwnedFd>; 2],
    /// What each pipe held when it was made.
    made_size: [i32; 2],
    lines: [Lines; 2],
    output: Output,
    /// Lines read and not sent yet, in order.
    queue: Vec<(Stream, String)>,
    stop: CancellationToken,
}

impl OrderedReader {
    /// Watches `stdout` and `stderr`, the read ends of two [`step_pipe`]s.
    pub(super) fn new(
        stdout: OwnedFd,
        stderr: OwnedFd,
        tx: Sender<(Stream, String)>,
        stop: CancellationToken,
        masker: &Masker,
    ) -> io::Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let watch = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let mut made_size = [0; 2];
        for (index, pipe) in [&stdout, &stderr].into_iter().enumerate() {
            // The read end's own flags: the step's write end stays blocking.
            let flags = OFlag::from_bits_truncate(fcntl(pipe, FcntlArg::F_GETFL)?);
            fcntl(pipe, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
            made_size[index] = fcntl(pipe, FcntlArg::F_GETPIPE_SZ)?;
            epoll::add(
                &watch,
                pipe,
                epoll::EventData::new_u64(index as u64),
                epoll::EventFlags::IN | epoll::EventFlags::ET,
            )?;
        }
        // Deprecated because a `T` could swap its descriptor while registered; an
        // `OwnedFd` owned by the `AsyncFd` cannot (as in `super::exit_notice`).
        #[allow(deprecated)]
        let epoll = AsyncFd::with_interest(watch, tokio::io::Interest::READABLE)?;
        Ok(OrderedReader {
            epoll,
            pipes: [Some(stdout), Some(stderr)],
            made_size,
            lines: STREAMS.map(|stream| Lines::new(stream, masker.clone())),
            output: Output::new(tx),
            queue: Vec::new(),
            stop,
        })
    }

    /// Reads until EOF on both pipes (or `stop` with nothing ready), delivering every
    /// line read.
    pub(super) async fn run(mut self) {
        let mut buf = vec![0; READ_BYTES];
        let mut after_stop = AFTER_STOP_BYTES;
        while self.pipes.iter().any(Option::is_some) {
            let stopped = self.stop.is_cancelled();
            if stopped && after_stop == 0 {
                break;
            }
            let event = match next_event(self.epoll.get_ref()) {
                Ok(Some(event)) => Some(event),
                Ok(None) => {
                    // Nothing ready: send what was read, then wait for more.
                    self.output.send(&mut self.queue).await;
                    if stopped {
                        break;
                    }
                    match self.wait().await {
                        Ok(event) => event,
                        Err(err) => {
                            self.failed(&err);
                            break;
                        }
                    }
                }
                Err(err) => {
                    self.failed(&err);
                    break;
                }
            };
            let taken = match event {
                Some((index, hangup)) => self.take(index, hangup, &mut buf),
                None => self.look_into_grown_pipes(&mut buf),
            };
            if stopped {
                after_stop = after_stop.saturating_sub(taken.max(1));
            }
            if self.queue.len() >= SEND_GROUP {
                self.output.send(&mut self.queue).await;
            }
        }
        for lines in &mut self.lines {
            lines.finish(&mut self.queue);
        }
        self.output.send(&mut self.queue).await;
    }

    /// Waits for the next event: `None` when `stop` fired or the wait found nothing (a
    /// readiness that was already taken, or [`GROWN_PIPE_LOOK`] passed).
    async fn wait(&self) -> io::Result<Option<(usize, bool)>> {
        let idle = tokio::time::sleep(GROWN_PIPE_LOOK);
        tokio::select! {
            biased;
            ready = self.epoll.readable() => {
                let mut guard = ready?;
                match guard.try_io(|epoll| {
                    next_event(epoll.get_ref())?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
                }) {
                    Ok(event) => event.map(Some),
                    Err(_would_block) => Ok(None),
                }
            }
            () = self.stop.cancelled() => Ok(None),
            () = idle, if self.grown() => Ok(None),
        }
    }

    /// Whether the step grew one of its pipes (`F_SETPIPE_SZ` on its end).
    fn grown(&self) -> bool {
        use nix::fcntl::{fcntl, FcntlArg};
        self.pipes.iter().zip(self.made_size).any(|(pipe, made)| {
            pipe.as_ref()
                .and_then(|pipe| fcntl(pipe, FcntlArg::F_GETPIPE_SZ).ok())
                .is_some_and(|size| size > made)
        })
    }

    /// Reads what a grown pipe holds beyond the packets its events announced (an event
    /// per write only holds while a pipe holds one packet).
    fn look_into_grown_pipes(&mut self, buf: &mut [u8]) -> usize {
        if !self.grown() {
            return 0;
        }
        (0..STREAMS.len())
            .map(|index| self.take(index, true, buf))
            .sum()
    }

    /// Reads the packet an event of pipe `index` announced — everything up to EOF when
    /// its writers are gone (`hangup`) — and returns how many bytes.
    fn take(&mut self, index: usize, hangup: bool, buf: &mut [u8]) -> usize {
        let mut taken = 0;
        while let Some(pipe) = &self.pipes[index] {
            match rustix::io::read(pipe, &mut *buf) {
                Ok(0) => {
                    self.lines[index].finish(&mut self.queue);
                    self.pipes[index] = None;
                }
                Ok(read) => {
                    self.lines[index].feed(&buf[..read], &mut self.queue);
                    taken += read;
                    if !hangup {
                        break;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => {
                    let stream = STREAMS[index];
                    self.lines[index].finish(&mut self.queue);
                    let text = format!("runner: reading {} failed: {err}", stream.as_str());
                    self.queue.push((Stream::System, text));
                    self.pipes[index] = None;
                }
            }
        }
        taken
    }

    /// The watch itself failed (it never does): said in the log, and reading ends.
    fn failed(&mut self, err: &io::Error) {
        let text = format!("runner: reading the step's output failed: {err}");
        self.queue.push((Stream::System, text));
    }
}

/// The next pipe whose write woke the watch, and whether its writers are gone; `None`
/// when none is ready.
fn next_event(watch: &OwnedFd) -> io::Result<Option<(usize, bool)>> {
    let mut events = [MaybeUninit::<epoll::Event>::uninit(); 1];
    let now = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match epoll::wait(watch, &mut events, Some(&now)) {
            Ok((ready, _)) => {
                return Ok(ready.first().map(|event| {
                    let (flags, data) = (event.flags, event.data);
                    let index = usize::from(data.u64() != 0);
                    let hangup = flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR);
                    (index, hangup)
                }))
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::launch::step_pipe;
    use std::io::Write;

    use super::*;

    /// Runs `write` on a thread with the write ends of two step pipes (stdout, stderr)
    /// and returns the lines the reader delivered, through a channel of `capacity`.
    async fn read_both(
        capacity: usize,
        write: impl FnOnce(std::fs::File, std::fs::File) + Send + 'static,
    ) -> Vec<(Stream, String)> {
        let (out_r, out_w) = step_pipe().unwrap();
        let (err_r, err_w) = step_pipe().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(capacity);
        let reader = OrderedReader::new(
            out_r,
            err_r,
            tx,
            CancellationToken::new(),
            &Masker::default(),
        )
        .unwrap();
        let reading = tokio::spawn(reader.run());
        let writing = std::thread::spawn(move || write(out_w.into(), err_w.into()));
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        reading.await.unwrap();
        writing.join().unwrap();
        lines
    }

    // regression (issue 54): stdout and stderr were read by two tasks in reads of up to
    // 256 KiB, so lines written alternately came out in runs of hundreds per stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alternating_writes_to_both_streams_keep_their_order() {
        const COUNT: usize = 20_000;
        let lines = read_both(64, |mut out, mut err| {
            for i in 0..COUNT {
                out.write_all(format!("o {i}\n").as_bytes()).unwrap();
                err.write_all(format!("e {i}\n").as_bytes()).unwrap();
            }
        })
        .await;
        let written: Vec<(Stream, String)> = (0..COUNT)
            .flat_map(|i| {
                [
                    (Stream::Stdout, format!("o {i}")),
                    (Stream::Stderr, format!("e {i}")),
                ]
            })
            .collect();
        let first_off = lines.iter().zip(&written).position(|(a, b)| a != b);
        assert_eq!(
            first_off,
            None,
            "{:?}",
            first_off.map(|at| &lines[at..at + 4])
        );
        assert_eq!(lines.len(), written.len());
    }

    #[tokio::test]
    async fn long_writes_partial_lines_and_unterminated_ends_keep_their_place() {
        let long = "x".repeat(100_000);
        let expected_long = long.clone();
        let lines = read_both(4, move |mut out, mut err| {
            out.write_all(b"a").unwrap();
            err.write_all(b"b\n").unwrap();
            out.write_all(format!("{long}\n").as_bytes()).unwrap();
            err.write_all(b"c\nd").unwrap();
            drop(err);
            out.write_all(b"e").unwrap();
        })
        .await;
        let texts: Vec<(Stream, &str)> = lines.iter().map(|(s, t)| (*s, t.as_str())).collect();
        let long_lines = expected_long
            .len()
            .div_ceil(plue_types::protocol::MAX_LINE_BYTES);
        assert_eq!(texts.len(), 4 + long_lines, "{:?}", &texts[..2]);
        assert_eq!(texts[0], (Stream::Stderr, "b"));
        let joined: String = texts[1..=long_lines].iter().map(|(_, t)| *t).collect();
        assert_eq!(joined, format!("a{expected_long}"));
        assert_eq!(
            texts[long_lines + 1..],
            [
                (Stream::Stderr, "c"),
                (Stream::Stderr, "d"),
                (Stream::Stdout, "e")
            ]
        );
    }

    #[tokio::test]
    async fn stop_ends_reading_when_the_pipes_are_idle() {
        let (out_r, out_w) = step_pipe().unwrap();
        let (err_r, err_w) = step_pipe().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stop = CancellationToken::new();
        let reader = OrderedReader::new(out_r, err_r, tx, stop.clone(), &Masker::default());
        let reading = tokio::spawn(reader.unwrap().run());
        let mut err = std::fs::File::from(err_w);
        err.write_all(b"one\ntw").unwrap();
        assert_eq!(rx.recv().await.unwrap(), (Stream::Stderr, "one".to_owned()));
        stop.cancel();
        // The writers are still open; the partial line is delivered and reading ends.
        assert_eq!(rx.recv().await.unwrap(), (Stream::Stderr, "tw".to_owned()));
        reading.await.unwrap();
        assert!(rx.recv().await.is_none());
        drop(out_w);
    }
}
