//! Tests of `events`: the line tap's order and bounds, run watches, and how queued work
//! wakes polls here and on other replicas.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::futures::Notified;

use super::*;

fn line(seq: u64, text: &str) -> LogLine {
    LogLine {
        seq,
        stream: plue_types::protocol::Stream::Stdout,
        text: text.into(),
        ts_ms: 0,
    }
}

#[test]
fn a_tap_gets_its_runs_lines_in_order() {
    let events = Events::default();
    assert!(!events.tapped(7));
    let mut tap = events.tap_lines(7);
    assert!(events.tapped(7));
    events.offer_lines(7, 70, 1, vec![line(1, "a"), line(2, "b")]);
    events.offer_lines(8, 80, 1, vec![line(1, "other run")]);
    events.offer_lines(7, 71, 1, vec![line(1, "c")]);
    let first = tap.try_recv().unwrap();
    assert_eq!((first.step_run_id, first.lines.len()), (70, 2));
    assert_eq!(tap.try_recv().unwrap().lines[0].text, "c");
    assert!(tap.try_recv().is_none(), "nothing of run 8");
}

#[test]
fn lines_left_out_are_said_to_the_runs_tap_only() {
    let events = Events::default();
    events.left_out(7, 70);
    let tap = events.tap_lines(7);
    assert!(!tap.take_left_out(70), "said before the tap existed");
    events.left_out(7, 70);
    events.left_out(8, 71);
    assert!(tap.take_left_out(70));
    assert!(!tap.take_left_out(70), "taken once");
    assert!(!tap.take_left_out(71), "another run's step");
}

#[test]
fn a_reader_that_falls_behind_misses_batches_not_memory() {
    let events = Events::default();
    let mut tap = events.tap_lines(1);
    let big = "x".repeat(1 << 20);
    for seq in 1..=40 {
        events.offer_lines(1, 10, 1, vec![line(seq, &big)]);
    }
    let mut kept = Vec::new();
    while let Some(batch) = tap.try_recv() {
        kept.push(batch);
    }
    assert!(
        (10..40).contains(&kept.len()),
        "{} of 40 1 MiB batches kept under a 16 MiB budget",
        kept.len()
    );
    // Each step run with a batch left out is said so, once.
    assert!(tap.take_left_out(10));
    assert!(!tap.take_left_out(10));
    // Read batches give their room back.
    kept.clear();
    events.offer_lines(1, 10, 1, vec![line(41, &big)]);
    assert_eq!(tap.try_recv().unwrap().lines[0].seq, 41);
}

#[test]
fn a_watch_gets_the_moves_of_its_run_only_until_it_is_dropped() {
    let events = Events::default();
    events.steps_moved(3, &[30]);
    let mut watch = events.watch_steps(3);
    events.steps_moved(3, &[31, 32]);
    events.steps_moved(4, &[40]);
    events.steps_moved(3, &[]);
    assert_eq!(watch.try_recv().unwrap(), vec![31, 32]);
    assert!(
        watch.try_recv().is_err(),
        "nothing before the watch, of run 4, or empty"
    );
    drop(watch);
    events.steps_moved(3, &[33]);
    assert!(
        lock(&events.watches).is_empty(),
        "a dropped watch is forgotten"
    );
}

/// Polls waiting the way the internal API's poll waits: registered, then enabled.
fn waiting_polls(events: &Events, n: usize) -> Vec<(PollWait<'_>, Pin<Box<Notified<'_>>>)> {
    (0..n)
        .map(|_| {
            let wait = events.poll_wait();
            let mut notified = Box::pin(wait.notified());
            notified.as_mut().enable();
            (wait, notified)
        })
        .collect()
}

/// How many of `polls` were woken; those leave the list (as a woken poll stops waiting).
fn woken(polls: &mut Vec<(PollWait<'_>, Pin<Box<Notified<'_>>>)>) -> usize {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let before = polls.len();
    polls.retain_mut(|(_, n)| n.as_mut().poll(&mut cx).is_pending());
    before - polls.len()
}

// regression (bench replicas): every queued step woke every idle poll, 64 claim
// transactions for one step.
#[test]
fn a_queued_step_wakes_one_poll_and_the_controllers() {
    let events = Events::default();
    let mut polls = waiting_polls(&events, 8);
    let mut controller = Box::pin(events.work.notified());
    controller.as_mut().enable();
    events.queued(1);
    assert_eq!(woken(&mut polls), 1);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(controller.as_mut().poll(&mut cx).is_ready());
    events.queued(0);
    assert_eq!(woken(&mut polls), 0, "nothing queued wakes nobody");
}

#[test]
fn as_many_steps_as_polls_wake_them_all_and_so_does_a_sweep() {
    let events = Events::default();
    let mut polls = waiting_polls(&events, 4);
    events.queued(3);
    assert_eq!(woken(&mut polls), 3);
    let mut polls = waiting_polls(&events, 4);
    events.queued(9);
    assert_eq!(woken(&mut polls), 4);
    let mut polls = waiting_polls(&events, 4);
    events.wake_all();
    assert_eq!(woken(&mut polls), 4);
}

// A step only some runners may take: the woken poll that may not take it wakes every
// waiting poll, once per queueing.
#[test]
fn a_poll_that_may_not_take_the_work_sweeps_once_per_queueing() {
    let events = Events::default();
    let mut polls = waiting_polls(&events, 4);
    events.queued(1);
    assert_eq!(woken(&mut polls), 1);
    let unlucky = events.poll_wait();
    assert!(unlucky.sweep_armed());
    assert!(unlucky.sweep(), "the first sweep of this queueing");
    assert_eq!(woken(&mut polls), 3, "every other waiting poll");
    let mut polls = waiting_polls(&events, 2);
    assert!(!unlucky.sweep_armed() && !unlucky.sweep(), "spent");
    assert_eq!(woken(&mut polls), 0);
    events.queued(1);
    assert!(unlucky.sweep_armed(), "the next queueing arms it again");
}

// A poll woken for a step that returned before it claimed (its runner's debug session,
// an error) hands the wake on instead of leaving the step to the timer.
#[test]
fn an_unused_wake_reaches_another_poll() {
    let events = Events::default();
    let mut polls = waiting_polls(&events, 2);
    events.pass_wake();
    assert_eq!(woken(&mut polls), 1);
}

// Queueings and cancels go to the relay; one heard from another replica wakes as the
// local one does and goes no further (no echo between replicas).
#[tokio::test]
async fn queueings_and_cancels_are_relayed_and_heard_ones_are_not() {
    let events = Events::default();
    events.queued(1); // no relay yet: fine
    let (tx, mut relayed) = mpsc::unbounded_channel();
    assert!(events.relay_to(tx.clone()));
    assert!(!events.relay_to(tx), "one relay");
    events.queued(0);
    events.queued(2);
    events.send(Event::Step { run_id: 5 });
    events.send(Event::Cancel { run_id: 5 });
    assert_eq!(relayed.try_recv().unwrap(), Hint::Queued(2));
    assert_eq!(relayed.try_recv().unwrap(), Hint::Cancel { run_id: 5 });
    assert!(relayed.try_recv().is_err(), "nothing else");

    let mut polls = waiting_polls(&events, 3);
    let mut listener = events.subscribe();
    events.heard(Hint::Queued(2));
    events.heard(Hint::Cancel { run_id: 9 });
    assert_eq!(woken(&mut polls), 2);
    let mut polls = waiting_polls(&events, 3);
    events.heard(Hint::Sweep);
    assert_eq!(woken(&mut polls), 3);
    assert_eq!(listener.try_recv().unwrap(), Event::Cancel { run_id: 9 });
    assert!(relayed.try_recv().is_err(), "heard hints are not relayed");
}

// What waiting polls here cover is not relayed; their sweep is.
#[test]
fn only_what_local_polls_do_not_cover_is_relayed_and_so_is_a_sweep() {
    let events = Events::default();
    let (tx, mut relayed) = mpsc::unbounded_channel();
    events.relay_to(tx);
    let polls = waiting_polls(&events, 2);
    events.queued(1);
    events.queued(3);
    assert_eq!(
        relayed.try_recv().unwrap(),
        Hint::Queued(1),
        "3 - 2 waiting"
    );
    assert!(polls[0].0.sweep());
    assert_eq!(relayed.try_recv().unwrap(), Hint::Sweep);
    assert!(relayed.try_recv().is_err(), "nothing else");
}

#[test]
fn a_dropped_reader_ends_its_tap() {
    let events = Events::default();
    drop(events.tap_lines(3));
    assert!(!events.tapped(3));
    events.offer_lines(3, 30, 1, vec![line(1, "nobody reads this")]);
}
