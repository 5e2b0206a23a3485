//! Crash trials: `voxline serve` killed with SIGKILL at random moments while
//! customers' texts and voice notes arrive, and restarted on the same data
//! folder each time. At the end every acknowledged message must have been
//! answered, each customer's answers must come in the order of their
//! messages, and every duplicate reply must fall in the one documented
//! window: Meta accepted the send and the process died before the `replied`
//! commit, so the restart sent the stored reply again.
//!
//! Used by `tests/crash_trials.rs` (a few kills) and
//! `benches/crash_trials.rs` (the issue's 50), each with
//! `#[path = ".../support/crash_trial.rs"] mod crash_trial;` beside
//! `mod support;`.
//!
//! The service answers with the echo (`[service] reply = "echo"`): a text
//! "c07 m003" is answered "You wrote: “c07 m003”", so a reply names its
//! message. A voice note's reply ("I heard: …") does not; a customer's notes
//! are never consecutive, so a note's reply is the one that follows the
//! reply to the text before it, and the store's `reply_text` confirms each
//! attribution at the end.

// The test and the bench each use part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voxline::channel::whatsapp::webhook::sign;
use voxline::pipeline::budget::{Budget, BudgetStage, Budgets};
use voxline::pipeline::reply::Notice;
use voxline::store::sqlite::SqliteStore;
use voxline::store::{Queue, StoreConfig, TurnState};

use crate::support::fake_graph::{FakeGraph, Sent};
use crate::support::{fixture, free_port, serve_command, text, voice_note, APP_SECRET};

/// The voice notes' recordings: customer `c` sends `NOTES[c % 3]`.
const NOTES: &[&str] = &[
    "commerce/en/order_status_1842.ogg",
    "commerce/en/faq_opening_hours.ogg",
    "commerce/en/price_blue_backpack.ogg",
];

/// What a trial does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kills: usize,
    pub messages: usize,
    pub customers: usize,
    /// One message in `note_every` of each customer's is a voice note (never
    /// two in a row); 0 sends texts only.
    pub note_every: usize,
    /// Each run is killed this long after it was started, uniformly within.
    pub kill_after_ms: (u64, u64),
    /// Every `kill_on_send`-th kill is not at a random moment but the
    /// instant the fake Graph API accepts a send (after the least of
    /// `kill_after_ms`, within the most): aimed at the window between
    /// Meta's acceptance and the `replied` commit. 0: every kill random.
    pub kill_on_send: usize,
    /// Mean pause between a customer's messages; `None` spreads them over
    /// the expected length of the kills, `Some(0)` sends each as soon as the
    /// previous one is acknowledged.
    pub gap_ms: Option<u64>,
    /// How long the last run may take, after the last message is due, to
    /// answer everything acknowledged.
    pub settle: Duration,
    pub seed: u64,
    /// Prints a line per kill as the trial goes.
    pub verbose: bool,
    /// Keeps the data folder and `serve.log` even when the trial passed
    /// (always kept when it failed).
    pub keep: bool,
}

impl Plan {
    /// The issue's trial: 50 kills while 200 messages (a tenth of them voice
    /// notes) from 20 customers arrive.
    pub fn issue() -> Self {
        Self {
            kills: 50,
            messages: 200,
            customers: 20,
            note_every: 10,
            kill_after_ms: (50, 1500),
            kill_on_send: 0,
            gap_ms: None,
            settle: Duration::from_secs(300),
            seed: seed_from_clock(),
            verbose: false,
            keep: false,
        }
    }

    fn gap_ms(&self) -> u64 {
        self.gap_ms.unwrap_or_else(|| {
            let mean_run = (self.kill_after_ms.0 + self.kill_after_ms.1) / 2;
            let per_customer = self.messages.div_ceil(self.customers.max(1)).max(1) as u64;
            self.kills as u64 * mean_run / per_customer
        })
    }

    /// Every message with when it is due, in the order each customer sends.
    fn messages(&self, rng: &mut Rng) -> Vec<Message> {
        let customers = self.customers.max(1);
        let gap = self.gap_ms();
        let mut due = vec![0u64; customers];
        (0..self.messages)
            .map(|i| {
                let (customer, seq) = (i % customers, i / customers);
                let note = self.note_every > 0
                    && (seq + customer) % self.note_every == self.note_every - 1;
                due[customer] += if seq == 0 {
                    rng.below(gap + 1)
                } else {
                    rng.below(2 * gap + 1)
                };
                Message {
                    customer,
                    seq,
                    wamid: format!("wamid.CRASH.c{customer:02}.m{seq:03}"),
                    from: number(customer),
                    note: note.then(|| NOTES[customer % NOTES.len()]),
                    due: Duration::from_millis(due[customer]),
                }
            })
            .collect()
    }
}

/// Every budget at an hour, the most allowed, as a `[budgets]` section.
/// Budgets are not under test: in a crash loop a voice note's turn starts
/// over at each restart, and the customer's later texts wait behind it
/// longer than a minute on a loaded machine; a holding message would then
/// go out, which is right for the service and noise for the trial.
fn patient_budgets_toml() -> String {
    let mut budgets = Budgets::default();
    let mut out = String::from("[budgets]\n");
    for stage in BudgetStage::ALL {
        let action = budgets.get(stage).action;
        // `set` checks the value is one the service accepts.
        budgets
            .set(stage, Budget::fixed(3_600_000, action))
            .unwrap();
        out += &format!(
            "{} = {{ ms = 3600000, action = \"{}\" }}\n",
            stage.name(),
            action.name()
        );
    }
    out
}

/// A customer's phone number.
fn number(customer: usize) -> String {
    format!("1555010{customer:04}")
}

/// The body of a text, naming its customer and place.
fn body(customer: usize, seq: usize) -> String {
    format!("c{customer:02} m{seq:03}")
}

#[derive(Debug, Clone)]
struct Message {
    customer: usize,
    seq: usize,
    wamid: String,
    from: String,
    /// The fixture a voice note carries; `None` for a text.
    note: Option<&'static str>,
    /// When it is sent, from the trial's start (or at once after the
    /// customer's previous message is acknowledged, if later).
    due: Duration,
}

impl Message {
    fn media_id(&self) -> String {
        format!("media-c{:02}-m{:03}", self.customer, self.seq)
    }

    fn webhook(&self) -> String {
        match self.note {
            Some(_) => voice_note(&self.wamid, &self.from, &self.media_id()),
            None => text(&self.wamid, &self.from, &body(self.customer, self.seq)),
        }
    }
}

/// A small xorshift generator: a trial is repeated with its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

pub fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// What the senders saw, shared with the trial.
#[derive(Default)]
struct Deliveries {
    /// Acknowledged (answered 200) messages' ids, in order of the 200s.
    acked: Vec<String>,
    /// POSTs made.
    posts: usize,
    /// POSTs that found no service listening (between a kill and the
    /// restart's listener).
    unreachable: usize,
    /// POSTs that reached a service and got no answer: cut by a kill, the
    /// message perhaps committed, perhaps not.
    cut: usize,
    /// POSTs answered other than 200.
    refused: usize,
    /// Messages acknowledged only after a POST of theirs was cut.
    redelivered: usize,
}

/// One SIGKILL.
#[derive(Debug, Clone)]
pub struct Kill {
    /// Since the trial started.
    pub at: Duration,
    /// How long the killed run had lived.
    pub lived: Duration,
    /// `None` for a kill at a random moment; for one aimed at a send,
    /// whether a send came before the run's time was up.
    pub on_send: Option<bool>,
    /// Messages the killed run acknowledged.
    pub acked_in_run: usize,
    /// Turns the store had not finished when the process died: what the
    /// next start resumes.
    pub unfinished: usize,
    /// Sends the fake Graph API had recorded when the process was reaped.
    pub sends_at_kill: usize,
    /// Sends it had recorded once the count stopped moving: a request the
    /// process wrote in full before it died is still accepted, as Meta
    /// would. The restart comes after.
    pub sends: usize,
}

/// A reply sent more than once.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub wamid: String,
    pub sends: usize,
    /// A kill fell between each send and the next, and the store recorded
    /// the last one only: the documented window. Otherwise why not.
    pub explained: Result<(), String>,
}

/// What a trial found.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub texts: usize,
    pub notes: usize,
    pub acknowledged: usize,
    pub answered: usize,
    /// Acknowledged, never answered: each with what the store says.
    pub unanswered: Vec<String>,
    pub order_violations: Vec<String>,
    pub duplicates: Vec<Duplicate>,
    /// Sends that answer no message, or not with the stored reply.
    pub unmatched: Vec<String>,
    /// Runs that ended other than by the trial's SIGKILL or SIGTERM.
    pub unexpected_exits: Vec<String>,
    pub kills: Vec<Kill>,
    pub posts: usize,
    pub unreachable: usize,
    pub cut: usize,
    pub refused: usize,
    pub redelivered: usize,
    pub sends: usize,
    pub wall: Duration,
    /// Where the data folder and `serve.log` are kept when the trial failed.
    pub kept: Option<PathBuf>,
}

impl Outcome {
    /// Nothing acknowledged is unanswered, order holds, every reply is
    /// accounted for and every duplicate is in the documented window.
    pub fn passed(&self) -> bool {
        self.unanswered.is_empty()
            && self.order_violations.is_empty()
            && self.unmatched.is_empty()
            && self.unexpected_exits.is_empty()
            && self.duplicates.iter().all(|d| d.explained.is_ok())
    }

    /// Sends beyond the first of each message's reply.
    pub fn duplicate_sends(&self) -> usize {
        self.duplicates.iter().map(|d| d.sends - 1).sum()
    }

    /// One line for the README.
    pub fn summary(&self) -> String {
        let unmatched = match self.unmatched.len() {
            0 => String::new(),
            n => format!(", {n} replies answering no message or not as stored"),
        };
        let explained = self
            .duplicates
            .iter()
            .filter(|d| d.explained.is_ok())
            .count();
        let busy = self.kills.iter().filter(|k| k.unfinished > 0).count();
        let aimed = self.kills.iter().filter(|k| k.on_send.is_some()).count();
        let aimed = match aimed {
            0 => "at random moments".to_string(),
            n => format!(
                "({} at random moments, {n} the instant Meta accepted a send)",
                self.kills.len() - n
            ),
        };
        format!(
            "{} SIGKILLs of `voxline serve` {aimed}, {} messages ({} texts, {} voice notes) from {} customers: \
             {} acknowledged, {} answered, {} unanswered, {} order violations, \
             {} duplicate sends ({} messages answered more than once, {} of them in the documented window){unmatched}; \
             {} kills left turns unfinished, {} webhook POSTs cut by a kill; \
             {:.0} s (seed {})",
            self.kills.len(),
            self.plan.messages,
            self.texts,
            self.notes,
            self.plan.customers,
            self.acknowledged,
            self.answered,
            self.unanswered.len(),
            self.order_violations.len(),
            self.duplicate_sends(),
            self.duplicates.len(),
            explained,
            busy,
            self.cut,
            self.wall.as_secs_f64(),
            self.plan.seed,
        )
    }

    /// Everything found, one finding a line.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for d in &self.duplicates {
            let why = match &d.explained {
                Ok(()) => "in the documented window".to_string(),
                Err(e) => format!("NOT EXPLAINED: {e}"),
            };
            out += &format!("duplicate: {} sent {} times, {why}\n", d.wamid, d.sends);
        }
        for u in &self.unanswered {
            out += &format!("unanswered: {u}\n");
        }
        for v in &self.order_violations {
            out += &format!("order violation: {v}\n");
        }
        for u in &self.unmatched {
            out += &format!("unmatched reply: {u}\n");
        }
        for e in &self.unexpected_exits {
            out += &format!("unexpected exit: {e}\n");
        }
        if self.refused > 0 {
            out += &format!("webhook POSTs answered other than 200: {}\n", self.refused);
        }
        if let Some(dir) = &self.kept {
            out += &format!(
                "data folder, serve.log and trial.txt kept in {}\n",
                dir.display()
            );
        }
        out
    }
}

/// Runs a trial.
pub async fn run(plan: &Plan) -> Outcome {
    let started = Instant::now();
    let mut rng = Rng::new(plan.seed);
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let config = dir.path().join("voxline.toml");
    std::fs::write(
        &config,
        format!("[service]\nreply = \"echo\"\n\n{}", patient_budgets_toml()),
    )
    .unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let messages = plan.messages(&mut rng);
    for m in &messages {
        if let Some(name) = m.note {
            graph.add_media(&m.media_id(), fixture(name), "audio/ogg; codecs=opus");
        }
    }
    let last_due = messages.iter().map(|m| m.due).max().unwrap_or_default();

    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let mut lanes: BTreeMap<usize, Vec<Message>> = BTreeMap::new();
    for m in &messages {
        lanes.entry(m.customer).or_default().push(m.clone());
    }
    let senders: Vec<_> = lanes
        .into_values()
        .map(|lane| tokio::spawn(send_in_order(addr, lane, started, deliveries.clone())))
        .collect();

    let spawn = |what: &str| Server::start(&graph, &data, &config, &log, port, what);
    let mut kills = Vec::new();
    let mut unexpected_exits = Vec::new();
    for k in 0..plan.kills {
        let mut server = spawn(&format!("run {}", k + 1));
        let acked_before = deliveries.lock().unwrap().acked.len();
        let (lo, hi) = plan.kill_after_ms;
        let after = Duration::from_millis(lo + rng.below(hi.saturating_sub(lo) + 1));
        let born = Instant::now();
        let on_send = if plan.kill_on_send > 0 && (k + 1) % plan.kill_on_send == 0 {
            tokio::time::sleep(Duration::from_millis(lo)).await;
            let sends = graph.sent().len();
            let rest = Duration::from_millis(hi.saturating_sub(lo));
            Some(graph.sends_beyond(sends, rest).await)
        } else {
            tokio::time::sleep(after).await;
            None
        };
        if let Some(status) = server.child.try_wait().unwrap() {
            unexpected_exits.push(format!(
                "run {} exited with {status} before its kill",
                k + 1
            ));
        }
        server.kill();
        let (at, lived) = (started.elapsed(), born.elapsed());
        let sends_at_kill = graph.sent().len();
        let sends = settled_sends(&graph).await;
        let unfinished = open_store(&data)
            .unfinished()
            .await
            .map(|t| t.len())
            .unwrap_or(0);
        let acked_in_run = deliveries.lock().unwrap().acked.len() - acked_before;
        let kill = Kill {
            at,
            lived,
            on_send,
            acked_in_run,
            unfinished,
            sends_at_kill,
            sends,
        };
        if plan.verbose {
            let how = match on_send {
                None => "random",
                Some(true) => "on a send",
                Some(false) => "no send came",
            };
            eprintln!(
                "kill {:>3} at {:>6.1} s, {how:>12}, after {:>4} ms: {:>3} acknowledged in the run, \
                 {:>3} turns unfinished, {:>4} sends so far ({} recorded after the kill)",
                k + 1,
                at.as_secs_f64(),
                lived.as_millis(),
                kill.acked_in_run,
                kill.unfinished,
                kill.sends,
                kill.sends - kill.sends_at_kill
            );
        }
        kills.push(kill);
    }

    // The last run: left alone until every acknowledged message is answered.
    let mut server = spawn("last run");
    let ready = server.wait_ready(Duration::from_secs(60)).await;
    if let Err(e) = ready {
        unexpected_exits.push(e);
    }
    let deadline = started + last_due.max(started.elapsed()) + plan.settle;
    loop {
        let senders_done = senders.iter().all(|s| s.is_finished());
        let acked = deliveries.lock().unwrap().acked.clone();
        let seen = attribute(&messages, &graph.sent());
        if senders_done && acked.iter().all(|id| seen.answered.contains_key(id)) {
            break;
        }
        if Instant::now() >= deadline || server.child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in &senders {
        s.abort();
    }
    match server.stop(Duration::from_secs(60)).await {
        Ok(()) => {}
        Err(e) => unexpected_exits.push(format!("last run: {e}")),
    }
    let wall = started.elapsed();

    let sent = graph.sent();
    let d = std::mem::take(&mut *deliveries.lock().unwrap());
    let store = open_store(&data);
    let mut outcome = judge(plan, &messages, &d, &sent, &kills, &store).await;
    outcome.unexpected_exits = unexpected_exits;
    outcome.wall = wall;
    if !outcome.passed() {
        outcome.unexpected_exits.extend(log_excerpt(&log));
    }
    if !outcome.passed() || plan.keep {
        let kept = dir.keep();
        std::fs::write(kept.join("trial.txt"), record(&outcome, &messages, &sent)).unwrap();
        outcome.kept = Some(kept);
    }
    outcome
}

/// The whole trial as text, kept beside `serve.log`: the findings, every
/// kill, every message and every send in the order the fake accepted them.
fn record(outcome: &Outcome, messages: &[Message], sent: &[Sent]) -> String {
    let mut out = format!("{}\n{}\n", outcome.summary(), outcome.details());
    for (i, k) in outcome.kills.iter().enumerate() {
        out += &format!("kill {}: {k:?}\n", i + 1);
    }
    for m in messages {
        out += &format!(
            "message {} from {} due {:?} {}\n",
            m.wamid,
            m.from,
            m.due,
            m.note.unwrap_or("text")
        );
    }
    for (i, s) in sent.iter().enumerate() {
        out += &format!("send {i}: {} to {} {:?}\n", s.id, s.to, s.text);
    }
    out
}

/// Delivers one customer's messages in order, each when due and not before
/// the previous one is acknowledged; a POST without a 200 is made again,
/// as Meta redelivers.
async fn send_in_order(
    addr: SocketAddr,
    lane: Vec<Message>,
    started: Instant,
    deliveries: Arc<Mutex<Deliveries>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for m in lane {
        tokio::time::sleep_until((started + m.due).into()).await;
        // Built once: a redelivery is the same notification.
        let body = m.webhook();
        let mut was_cut = false;
        loop {
            let answer = client
                .post(format!("http://{addr}/webhook"))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", sign(APP_SECRET, body.as_bytes()))
                .body(body.clone())
                .send()
                .await;
            {
                let mut d = deliveries.lock().unwrap();
                d.posts += 1;
                match answer.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        d.acked.push(m.wamid.clone());
                        d.redelivered += usize::from(was_cut);
                        break;
                    }
                    Ok(_) => d.refused += 1,
                    Err(e) if e.is_connect() => d.unreachable += 1,
                    Err(_) => {
                        d.cut += 1;
                        was_cut = true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Which message each send answers.
struct Attribution {
    /// Per message id, the indices in `sent` of its replies.
    answered: HashMap<String, Vec<usize>>,
    /// Per customer, the seq answered by each of their replies in order.
    per_customer: BTreeMap<usize, Vec<(usize, usize)>>,
    unmatched: Vec<String>,
}

fn attribute(messages: &[Message], sent: &[Sent]) -> Attribution {
    let by_number: HashMap<&str, usize> = messages
        .iter()
        .map(|m| (m.from.as_str(), m.customer))
        .collect();
    let by_place: HashMap<(usize, usize), &Message> =
        messages.iter().map(|m| ((m.customer, m.seq), m)).collect();
    let mut out = Attribution {
        answered: HashMap::new(),
        per_customer: BTreeMap::new(),
        unmatched: Vec::new(),
    };
    for (i, s) in sent.iter().enumerate() {
        let Some(&customer) = by_number.get(s.to.as_str()) else {
            out.unmatched
                .push(format!("send {i} to unknown {}: {s:?}", s.to));
            continue;
        };
        let replies = out.per_customer.entry(customer).or_default();
        let last = replies.last().map(|&(_, seq)| seq);
        let text = s.text.as_deref().unwrap_or_default();
        let seq = match text.strip_prefix("You wrote: \u{201c}") {
            Some(rest) => parse_body(rest.trim_end_matches('\u{201d}'))
                .filter(|&(c, seq)| {
                    c == customer && by_place.get(&(c, seq)).is_some_and(|m| m.note.is_none())
                })
                .map(|(_, seq)| seq),
            // A note's reply: the same note's again right after it (a
            // duplicate), else the customer's next note. Anything else (a
            // holding message, say) answers no message.
            None if !is_note_reply(text) => None,
            None => match last {
                Some(l) if by_place[&(customer, l)].note.is_some() => Some(l),
                _ => {
                    let after = last.map_or(0, |l| l + 1);
                    (after..)
                        .take_while(|seq| by_place.contains_key(&(customer, *seq)))
                        .find(|seq| by_place[&(customer, *seq)].note.is_some())
                }
            },
        };
        match seq {
            Some(seq) => {
                replies.push((i, seq));
                let id = by_place[&(customer, seq)].wamid.clone();
                out.answered.entry(id).or_default().push(i);
            }
            None => out
                .unmatched
                .push(format!("send {i} to c{customer:02}: {text:?}")),
        }
    }
    out
}

/// What the echo says to a voice note: its words, or why it has none.
fn is_note_reply(text: &str) -> bool {
    text.starts_with("I heard: ")
        || [
            Notice::Silence,
            Notice::Unplayable,
            Notice::TypePlease,
            Notice::NotHeard,
        ]
        .iter()
        .any(|n| n.english() == text)
}

/// "c07 m003" → (7, 3).
fn parse_body(body: &str) -> Option<(usize, usize)> {
    let (c, m) = body.split_once(' ')?;
    Some((
        c.strip_prefix('c')?.parse().ok()?,
        m.strip_prefix('m')?.parse().ok()?,
    ))
}

async fn judge(
    plan: &Plan,
    messages: &[Message],
    d: &Deliveries,
    sent: &[Sent],
    kills: &[Kill],
    store: &SqliteStore,
) -> Outcome {
    let seen = attribute(messages, sent);
    let mut unmatched = seen.unmatched.clone();

    let mut unanswered = Vec::new();
    for id in &d.acked {
        if !seen.answered.contains_key(id) {
            let state = match store.turn(id).await {
                Ok(t) => format!(
                    "state {}, attempts {}, reply_text {:?}, reply_id {:?}, failure {:?}, waiting {:?}",
                    t.state.name(),
                    t.attempts,
                    t.reply_text,
                    t.reply_id,
                    t.failure,
                    t.waiting
                ),
                Err(e) => format!("not in the store: {e}"),
            };
            unanswered.push(format!("{id}: {state}"));
        }
    }

    // Each customer's answers, repeats of the one before aside, must
    // follow the order of their messages.
    let mut order_violations = Vec::new();
    for (customer, replies) in &seen.per_customer {
        let mut prev: Option<usize> = None;
        let mut highest: Option<usize> = None;
        for &(i, seq) in replies {
            if prev != Some(seq) && highest.is_some_and(|h| seq <= h) {
                order_violations.push(format!(
                    "c{customer:02}: m{seq:03} answered (send {i}) after m{:03}",
                    highest.unwrap()
                ));
            }
            prev = Some(seq);
            highest = highest.max(Some(seq));
        }
    }

    // Every send must carry the reply the store composed for its message.
    let mut duplicates = Vec::new();
    let mut ids: Vec<&String> = seen.answered.keys().collect();
    ids.sort();
    for id in ids {
        let sends = &seen.answered[id];
        let turn = store.turn(id).await;
        let stored = turn.as_ref().ok().and_then(|t| t.reply_text.clone());
        for &i in sends {
            if sent[i].text != stored {
                unmatched.push(format!(
                    "send {i} attributed to {id} says {:?}, the store's reply is {stored:?}",
                    sent[i].text
                ));
            }
        }
        if let Ok(t) = &turn {
            if t.state != TurnState::Replied {
                unmatched.push(format!(
                    "{id} was answered but is {} in the store",
                    t.state.name()
                ));
            }
        }
        if sends.len() > 1 {
            let explained = explain(sends, sent, kills, turn.ok().and_then(|t| t.reply_id));
            duplicates.push(Duplicate {
                wamid: id.clone(),
                sends: sends.len(),
                explained,
            });
        }
    }

    Outcome {
        plan: plan.clone(),
        texts: messages.iter().filter(|m| m.note.is_none()).count(),
        notes: messages.iter().filter(|m| m.note.is_some()).count(),
        acknowledged: d.acked.len(),
        answered: seen.answered.len(),
        unanswered,
        order_violations,
        duplicates,
        unmatched,
        unexpected_exits: Vec::new(),
        kills: kills.to_vec(),
        posts: d.posts,
        unreachable: d.unreachable,
        cut: d.cut,
        refused: d.refused,
        redelivered: d.redelivered,
        sends: sent.len(),
        wall: Duration::ZERO,
        kept: None,
    }
}

/// A reply sent again is in the documented window when a kill fell between
/// each send and the next (the first was accepted by Meta before the
/// process died, the next came from the restarted one) and the store kept
/// the last send's id only.
fn explain(
    sends: &[usize],
    sent: &[Sent],
    kills: &[Kill],
    reply_id: Option<String>,
) -> Result<(), String> {
    for pair in sends.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if !kills.iter().any(|k| a < k.sends && k.sends <= b) {
            return Err(format!("no kill between sends {a} and {b}"));
        }
    }
    let last = &sent[*sends.last().unwrap()].id;
    if reply_id.as_ref() != Some(last) {
        return Err(format!(
            "the store recorded reply {reply_id:?}, the last send was {last}"
        ));
    }
    Ok(())
}

/// The fake's count of sends once it has not moved for 300 ms (at most
/// 5 s): the fake shares this process's two threads with the senders, and
/// on a loaded machine it may record a dead process's last send late.
async fn settled_sends(graph: &FakeGraph) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut count = graph.sent().len();
    let mut still_since = Instant::now();
    while Instant::now() < deadline && still_since.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = graph.sent().len();
        if now != count {
            (count, still_since) = (now, Instant::now());
        }
    }
    count
}

fn open_store(data: &Path) -> SqliteStore {
    SqliteStore::open(&StoreConfig {
        data_dir: data.to_path_buf(),
        ..StoreConfig::default()
    })
    .unwrap()
}

/// The log's last lines that are warnings or errors.
fn log_excerpt(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
        .collect();
    bad.iter()
        .rev()
        .take(20)
        .rev()
        .map(|l| format!("serve.log: {l}"))
        .collect()
}

/// One run of `voxline serve`, on a fixed port so that the senders need
/// not know which run they reach.
struct Server {
    child: Child,
    port: u16,
    what: String,
}

impl Server {
    fn start(
        graph: &FakeGraph,
        data: &Path,
        config: &Path,
        log: &Path,
        port: u16,
        what: &str,
    ) -> Self {
        Self {
            child: serve_command(graph, data, config, log, port)
                .spawn()
                .unwrap(),
            port,
            what: what.to_string(),
        }
    }

    /// SIGKILL, and reaps the process.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let url = format!("http://127.0.0.1:{}/readyz", self.port);
            if let Ok(r) = client.get(url).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "{} exited with {status} before it was ready",
                    self.what
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{} not ready within {within:?}", self.what))
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self, within: Duration) -> Result<(), String> {
        if let Some(status) = self.child.try_wait().unwrap() {
            return Err(format!("exited on its own with {status}"));
        }
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("exited with {status} after SIGTERM"))
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("did not stop within {within:?} of SIGTERM"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
