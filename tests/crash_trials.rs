//! Crash trials, the quick version: `voxline serve` killed with SIGKILL three
//! times while 30 texts from 5 customers arrive, restarted on the same data
//! folder each time. Every acknowledged text is answered, each customer's
//! answers keep the order of their texts, and a reply is sent twice only in
//! the documented window. `cargo bench --bench crash_trials` runs the
//! issue's 50 kills with voice notes (`tests/support/crash_trial.rs`).

mod support;

#[path = "support/crash_trial.rs"]
mod crash_trial;

use std::time::Duration;

use crash_trial::{seed_from_clock, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_three_times_answers_every_acknowledged_text_once_in_order() {
    let plan = Plan {
        kills: 3,
        messages: 30,
        customers: 5,
        note_every: 0,
        // After the restart is listening (about half a second), mostly.
        kill_after_ms: (300, 1500),
        // The second kill lands the instant Meta accepts a send: in the
        // window where a duplicate is allowed, and no other.
        kill_on_send: 2,
        gap_ms: None,
        settle: Duration::from_secs(20),
        seed: seed_from_clock(),
        verbose: true,
        keep: false,
    };
    let outcome = tokio::time::timeout(Duration::from_secs(50), crash_trial::run(&plan))
        .await
        .expect("the trial took longer than 50 s");
    println!("{}", outcome.summary());
    assert!(
        outcome.passed(),
        "{}\n{}",
        outcome.summary(),
        outcome.details()
    );
    assert_eq!(outcome.acknowledged, 30, "{}", outcome.summary());
    assert_eq!(outcome.answered, 30, "{}", outcome.summary());
    assert!(
        outcome.duplicate_sends() <= plan.kills,
        "{}\n{}",
        outcome.summary(),
        outcome.details()
    );
}
