//! Crash trials, the issue's size: 50 SIGKILLs of `voxline serve` at random
//! moments while 200 texts and voice notes from 20 customers arrive, each
//! restart on the same data folder. Then every acknowledged message must be
//! answered, in each customer's order, and every duplicate reply must fall
//! in the documented window (`tests/support/crash_trial.rs`); the exit code
//! says whether they did. `tests/crash_trials.rs` is the quick version.
//!
//! `cargo bench --bench crash_trials`, sized by the environment:
//!
//! | variable      | default | meaning                                                  |
//! |---------------|---------|----------------------------------------------------------|
//! | `KILLS`       | 50      | SIGKILLs                                                 |
//! | `MESSAGES`    | 200     | messages in all                                          |
//! | `CUSTOMERS`   | 20      | customers sending them                                   |
//! | `NOTE_EVERY`  | 10      | one message in this many is a voice note; 0: texts only  |
//! | `KILL_MIN_MS` | 50      | a run lives at least this long (from its start)          |
//! | `KILL_MAX_MS` | 1500    | and at most this long                                    |
//! | `KILL_ON_SEND`| 0       | every this many-th kill lands the instant the fake Graph API accepts a send (the duplicate window); 0: all random |
//! | `GAP_MS`      | spread  | mean pause between a customer's messages; 0: each as soon as the last is acknowledged; unset: spread over the kills |
//! | `SETTLE_S`    | 300     | how long the last run may take to answer everything      |
//! | `SEED`        | clock   | repeats a trial                                          |
//! | `KEEP`        | 0       | 1 keeps the data folder and `serve.log` (kept anyway when the trial fails) |
//!
//! Voice notes are transcribed by the default model in the subprocess:
//! slow on two cores, hence a tenth of the messages and a long settle.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/crash_trial.rs"]
mod crash_trial;

use std::process::ExitCode;
use std::time::Duration;

use crash_trial::Plan;

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn main() -> ExitCode {
    // `cargo test --benches` runs bench targets without `--bench`: the
    // trial takes minutes, and `tests/crash_trials.rs` covers it there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("crash_trials: run with `cargo bench --bench crash_trials`");
        return ExitCode::SUCCESS;
    }
    let issue = Plan::issue();
    let plan = Plan {
        kills: var("KILLS", issue.kills),
        messages: var("MESSAGES", issue.messages),
        customers: var("CUSTOMERS", issue.customers),
        note_every: var("NOTE_EVERY", issue.note_every),
        kill_after_ms: (
            var("KILL_MIN_MS", issue.kill_after_ms.0),
            var("KILL_MAX_MS", issue.kill_after_ms.1),
        ),
        kill_on_send: var("KILL_ON_SEND", issue.kill_on_send),
        gap_ms: std::env::var("GAP_MS").ok().map(|_| var("GAP_MS", 0)),
        settle: Duration::from_secs(var("SETTLE_S", issue.settle.as_secs())),
        seed: var("SEED", issue.seed),
        verbose: true,
        keep: var("KEEP", 0u8) == 1,
    };
    assert!(
        plan.kill_after_ms.0 <= plan.kill_after_ms.1,
        "KILL_MIN_MS is above KILL_MAX_MS"
    );
    eprintln!("{plan:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(crash_trial::run(&plan));
    eprint!("{}", outcome.details());
    println!(
        "webhook POSTs {} ({} found nothing listening, {} cut by a kill, {} answered other than 200); \
         {} messages acknowledged after a cut POST; {} replies sent",
        outcome.posts,
        outcome.unreachable,
        outcome.cut,
        outcome.refused,
        outcome.redelivered,
        outcome.sends
    );
    println!("{}", outcome.summary());
    if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        println!("FAILED");
        ExitCode::FAILURE
    }
}
