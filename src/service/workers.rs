//! The worker pool: turns in order per customer, many customers at once.
//!
//! Each customer with messages waiting has a lane, a FIFO of message ids
//! served by one task, so a customer's turns run one at a time in the order
//! they arrived. Lanes run in parallel, bounded by a semaphore of
//! `[service] workers` permits held for the length of a turn. A lane holds
//! only ids: the messages themselves are in the store.
//!
//! A turn deferred to the outbox (the Graph API down, the token rejected)
//! keeps its lane: the lane gives its worker permit back, waits until the
//! turn is due (reading the store each second, so that `voxline outbox
//! retry` or `drop` from another process takes effect), and tries again;
//! the customer's later messages wait behind it, so answers keep their
//! order.
//!
//! A turn that panics is failed with the panic's message and the lane goes
//! on: one bad message blocks neither its customer nor the service.
//!
//! Draining (SIGTERM) stops lanes from starting turns, waits for the turns
//! in flight up to a deadline, then drops what is left; an unfinished turn
//! keeps its state in the store and resumes on the next start.
//!
//! On a store several processes share ([`Workers::shared`], Redis), the
//! lanes are the store's, not this process's: a customer's lane runs only
//! while this process holds the customer's lease, and takes each next turn
//! from the store in arrival order (whichever process acknowledged it), so
//! one customer's turns never run in two processes at once. The lease is
//! renewed while the lane runs and given up when it empties; a process that
//! dies stops renewing, its leases expire after `claim_idle_ms`, and the
//! claim scan of another process takes the customers over and finishes
//! their turns from the state they were left in. New messages wake the
//! workers through the store's work stream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pipeline::turn::{run_turn, Arrival, TurnContext, TurnOutcome};
use crate::store::{Leases, Progress};

/// Tries of a turn whose store write failed, before its lane moves on.
const STORE_RETRIES: u32 = 3;

/// How long after a lease's end the claim scan looks at it: past the
/// store's expiry, and never a busy loop.
const EXPIRY_MARGIN: Duration = Duration::from_millis(10);

type Lane = VecDeque<(String, Option<Arrival>)>;

#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<TurnContext>,
    /// Per customer: message ids waiting, with their arrival.
    lanes: Mutex<HashMap<String, Lane>>,
    permits: Semaphore,
    tasks: TaskTracker,
    /// No new turns start.
    draining: CancellationToken,
    /// Turns in flight are dropped where they are.
    abort: CancellationToken,
    /// The shared store's leases, when several processes run turns.
    shared: Option<Shared>,
}

/// How this process takes part in a shared store's lanes.
struct Shared {
    leases: Arc<dyn Leases>,
    /// This process's name on its leases.
    holder: String,
    /// A lease not renewed for this long is free for another process.
    lease_ms: u64,
    /// Customers whose lane runs here; `true` when woken since the lane
    /// last looked at the store.
    active: Mutex<HashMap<String, bool>>,
    /// When the webhooks this process acknowledged came in, by message id.
    arrivals: Mutex<HashMap<String, Arrival>>,
}

/// What a drain left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Turns still running at the deadline, dropped and left for the next start.
    pub abandoned: bool,
}

impl Workers {
    pub fn new(ctx: Arc<TurnContext>, workers: usize) -> Self {
        Self::build(ctx, workers, None)
    }

    fn build(ctx: Arc<TurnContext>, workers: usize, shared: Option<Shared>) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx,
                lanes: Mutex::new(HashMap::new()),
                permits: Semaphore::new(workers.max(1)),
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
                abort: CancellationToken::new(),
                shared,
            }),
        }
    }

    /// Workers on a store that other processes share: lanes run under
    /// per-customer leases of `lease_ms`, woken by the store's work stream
    /// and by a claim scan (every `lease_ms / 2`, and when a lease held
    /// elsewhere runs out) that also resumes the turns of customers whose
    /// lease is free: at start, and after another process died.
    pub fn shared(
        ctx: Arc<TurnContext>,
        workers: usize,
        leases: Arc<dyn Leases>,
        lease_ms: u64,
    ) -> Self {
        let shared = Shared {
            leases,
            holder: holder_name(),
            lease_ms: lease_ms.max(100),
            active: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(HashMap::new()),
        };
        tracing::info!(holder = %shared.holder, lease_ms, "running turns on the shared store");
        let workers = Self::build(ctx, workers, Some(shared));
        let inner = workers.inner.clone();
        workers.inner.tasks.spawn(inner.clone().listen());
        workers.inner.tasks.spawn(inner.claim_scan());
        workers
    }

    /// Queues message `message_id` from `customer` behind that customer's
    /// earlier messages. Does not wait.
    /// `arrival` is when its webhook came in (none for a resumed turn).
    pub fn submit(&self, customer: &str, message_id: String, arrival: Option<Arrival>) {
        if self.inner.draining.is_cancelled() {
            // It is in the store; the next start picks it up.
            return;
        }
        if let Some(shared) = &self.inner.shared {
            if let Some(arrival) = arrival {
                lock(&shared.arrivals).insert(message_id, arrival);
            }
            self.inner.clone().wake(customer);
            return;
        }
        crate::metrics::global().queue_depth().inc();
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lane) = lanes.get_mut(customer) {
            lane.push_back((message_id, arrival));
            return;
        }
        lanes.insert(
            customer.to_string(),
            VecDeque::from([(message_id, arrival)]),
        );
        drop(lanes);
        let inner = self.inner.clone();
        let customer = customer.to_string();
        self.inner
            .tasks
            .spawn(async move { inner.run_lane(customer).await });
    }

    /// Messages waiting in lanes, turns in flight included.
    pub fn queued(&self) -> usize {
        let lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.values().map(VecDeque::len).sum()
    }

    /// Stops starting turns and waits up to `deadline` for those in flight.
    pub async fn drain(&self, deadline: Duration) -> Drained {
        self.inner.draining.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(deadline, self.inner.tasks.wait())
            .await
            .is_ok()
        {
            return Drained { abandoned: false };
        }
        tracing::warn!("drain deadline reached; turns in flight resume on the next start");
        self.inner.abort.cancel();
        self.inner.tasks.wait().await;
        Drained { abandoned: true }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A name for this process's leases: host, process id and start time, so
/// that a restarted process is not taken for its predecessor.
fn holder_name() -> String {
    let host = crate::telemetry::host_name();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{host}-{}-{started}", std::process::id())
}

impl Inner {
    /// Makes sure `customer`'s lane runs here, or looks at the store again
    /// if it already does.
    fn wake(self: Arc<Self>, customer: &str) {
        let Some(shared) = &self.shared else { return };
        if self.draining.is_cancelled() {
            return;
        }
        let mut active = lock(&shared.active);
        if let Some(woken) = active.get_mut(customer) {
            *woken = true;
            return;
        }
        active.insert(customer.to_string(), false);
        drop(active);
        let customer = customer.to_string();
        let inner = self.clone();
        self.tasks
            .spawn(async move { inner.run_shared_lane(customer).await });
    }

    /// Wakes the lanes of customers with new messages, whichever process
    /// stored them.
    async fn listen(self: Arc<Self>) {
        let Some(shared) = &self.shared else { return };
        let mut position = "$".to_string();
        loop {
            let read = tokio::select! {
                r = shared.leases.wait_for_work(&position) => r,
                () = self.draining.cancelled() => return,
            };
            match read {
                Ok((next, customers)) => {
                    position = next;
                    for customer in customers {
                        self.clone().wake(&customer);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the work stream");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = self.draining.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Wakes a lane for every customer with unfinished turns whose lease is
    /// free (at start, or a dead process's expired lease), and looks again
    /// when the first lease another process holds runs out, or after half
    /// a lease at the latest: a dead process's customers are taken over
    /// within a few milliseconds of their lease's end.
    async fn claim_scan(self: Arc<Self>) {
        let Some(shared) = &self.shared else { return };
        let every = Duration::from_millis(shared.lease_ms / 2);
        loop {
            // Arrivals of turns another process ran are not needed.
            lock(&shared.arrivals).retain(|_, a| a.at.elapsed() < Duration::from_secs(600));
            let mut next = every;
            match shared.leases.busy().await {
                Ok(customers) => {
                    for busy in customers {
                        let here = lock(&shared.active).contains_key(&busy.customer);
                        match busy.held_for_ms {
                            Some(left) if !here => {
                                next = next.min(Duration::from_millis(left) + EXPIRY_MARGIN);
                            }
                            _ => self.clone().wake(&busy.customer),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the customers waiting"),
            }
            tokio::select! {
                () = tokio::time::sleep(next.max(EXPIRY_MARGIN)) => {}
                () = self.draining.cancelled() => return,
            }
        }
    }

    /// A customer's lane on the shared store: while this process holds the
    /// customer's lease, the customer's turns in arrival order.
    async fn run_shared_lane(self: Arc<Self>, customer: String) {
        let Some(shared) = &self.shared else { return };
        loop {
            if !self.draining.is_cancelled() {
                self.drain_customer(shared, &customer).await;
            }
            // Leave only when nothing woke the lane since it last looked:
            // a message stored meanwhile is not left without a lane.
            let mut active = lock(&shared.active);
            match active.get_mut(&customer) {
                Some(woken) if *woken && !self.draining.is_cancelled() => *woken = false,
                _ => {
                    active.remove(&customer);
                    return;
                }
            }
        }
    }

    /// Runs `customer`'s turns while the lease is ours; gives it up after.
    /// A worker permit is taken before the lease, so that a busy process
    /// leaves other customers to a process with room.
    async fn drain_customer(&self, shared: &Shared, customer: &str) {
        let permit = tokio::select! {
            p = self.permits.acquire() => p,
            () = self.draining.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        let mut permit = Some(permit);
        match shared
            .leases
            .hold(customer, &shared.holder, shared.lease_ms)
            .await
        {
            Ok(true) => {}
            // Another process runs this customer's turns.
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a customer's lease");
                return;
            }
        }
        // Lost: another process may take the customer, so this one stops,
        // the turn in flight included (it resumes there from its stored
        // state, as after a crash).
        let lost = CancellationToken::new();
        let renewing = {
            let (leases, holder) = (shared.leases.clone(), shared.holder.clone());
            let (customer, lost, lease_ms) = (customer.to_string(), lost.clone(), shared.lease_ms);
            tokio::spawn(async move {
                let lease = Duration::from_millis(lease_ms);
                // The lease runs at least until `renewed + lease`: the time
                // is taken before each request, which the server answers
                // after. Stop a margin before that.
                let margin = (lease / 6).min(Duration::from_millis(500));
                let mut renewed = tokio::time::Instant::now();
                let mut pause = lease / 3;
                loop {
                    tokio::time::sleep(pause).await;
                    let asked = tokio::time::Instant::now();
                    match leases.renew(&customer, &holder, lease_ms).await {
                        Ok(true) => {
                            renewed = asked;
                            pause = lease / 3;
                        }
                        Ok(false) => break,
                        // A slow or restarting store: try again soon, and
                        // give up only before the lease could expire.
                        Err(e) if renewed.elapsed() + margin < lease => {
                            tracing::warn!(error = %e, "cannot renew a customer's lease; trying again");
                            pause = Duration::from_millis(100).min(lease / 10);
                        }
                        Err(_) => break,
                    }
                }
                tracing::warn!("a customer's lease was lost; their turn stops here");
                lost.cancel();
            })
        };
        let mut last: Option<String> = None;
        while !self.draining.is_cancelled() && !lost.is_cancelled() {
            let next = match shared.leases.next_turn(customer).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a customer's next turn");
                    break;
                }
            };
            let Some(message_id) = next else { break };
            if last.as_deref() == Some(message_id.as_str()) {
                // Still unfinished after its tries (the store failing):
                // left for a later claim scan rather than tried in a loop.
                break;
            }
            let arrival = lock(&shared.arrivals).remove(&message_id);
            if !self
                .run_to_end(&message_id, arrival, &mut permit, &lost)
                .await
            {
                break;
            }
            last = Some(message_id);
        }
        renewing.abort();
        if let Err(e) = shared.leases.release(customer, &shared.holder).await {
            tracing::warn!(error = %e, "cannot give a customer's lease up; it expires");
        }
    }

    /// Runs one turn with `permit`, waiting out its deferrals without it.
    /// `false` when the service stopped it.
    async fn run_to_end<'a>(
        &'a self,
        message_id: &str,
        mut arrival: Option<Arrival>,
        permit: &mut Option<tokio::sync::SemaphorePermit<'a>>,
        lost: &CancellationToken,
    ) -> bool {
        let metrics = crate::metrics::global();
        loop {
            if permit.is_none() {
                let acquired = tokio::select! {
                    p = self.permits.acquire() => p,
                    () = self.draining.cancelled() => return false,
                };
                let Ok(acquired) = acquired else { return false };
                *permit = Some(acquired);
            }
            metrics.in_flight().inc();
            let done = tokio::select! {
                d = self.turn(message_id, arrival) => Some(d),
                () = self.abort.cancelled() => None,
                () = lost.cancelled() => None,
            };
            metrics.in_flight().dec();
            let Some(deferred) = done else { return false };
            let Some(retry_at_ms) = deferred else {
                return true;
            };
            *permit = None;
            arrival = None;
            let due = tokio::select! {
                due = self.wait_until_due(message_id, retry_at_ms) => due,
                () = lost.cancelled() => false,
            };
            if !due {
                return false;
            }
        }
    }

    async fn run_lane(self: Arc<Self>, customer: String) {
        loop {
            let next = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
                let next = lanes.get(&customer).and_then(|lane| lane.front().cloned());
                if next.is_none() || self.draining.is_cancelled() {
                    lanes.remove(&customer);
                }
                next
            };
            let Some((message_id, arrival)) = next else {
                return;
            };
            let metrics = crate::metrics::global();
            let mut arrival = arrival;
            let mut first = true;
            loop {
                if self.draining.is_cancelled() {
                    return;
                }
                let permit = tokio::select! {
                    p = self.permits.acquire() => p,
                    () = self.draining.cancelled() => return,
                };
                let Ok(permit) = permit else { return };
                if first {
                    metrics.queue_depth().dec();
                    first = false;
                }
                metrics.in_flight().inc();
                let done = tokio::select! {
                    d = self.turn(&message_id, arrival) => Some(d),
                    () = self.abort.cancelled() => None,
                };
                metrics.in_flight().dec();
                drop(permit);
                let Some(deferred) = done else { return };
                let Some(retry_at_ms) = deferred else { break };
                // A retried turn has no arrival: its customer was not kept
                // waiting by this process.
                arrival = None;
                if !self.wait_until_due(&message_id, retry_at_ms).await {
                    return;
                }
            }
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(lane) = lanes.get_mut(&customer) {
                lane.pop_front();
            }
        }
    }

    /// Runs the turn; `Some(retry_at_ms)` when it was deferred.
    async fn turn(&self, message_id: &str, arrival: Option<Arrival>) -> Option<i64> {
        for attempt in 1..=STORE_RETRIES {
            // A retry's wait is the turn's too: keep its zero.
            let run = std::panic::AssertUnwindSafe(run_turn(&self.ctx, message_id, arrival));
            match run.catch_unwind().await {
                Ok(Ok(TurnOutcome::Deferred { retry_at_ms, .. })) => return Some(retry_at_ms),
                Ok(Ok(_)) => return None,
                Ok(Err(e)) => {
                    tracing::error!(wamid = message_id, attempt, error = %e, "turn stopped by a store error");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    drop(panic);
                    self.fail_panicked(message_id, &what).await;
                    return None;
                }
            }
        }
        tracing::error!(
            wamid = message_id,
            "turn left unfinished; it resumes on the next start"
        );
        None
    }

    /// Ends a turn that panicked as failed, with the panic's message.
    async fn fail_panicked(&self, message_id: &str, what: &str) {
        let reason = format!("the turn panicked: {what}");
        tracing::error!(wamid = message_id, %reason, "turn failed");
        crate::metrics::global().turn_panicked();
        let failed = Progress::Failed {
            reason: &reason,
            dead_letter: true,
        };
        if let Err(e) = self.ctx.queue.advance(message_id, failed).await {
            tracing::error!(wamid = message_id, error = %e, "could not record the panicked turn");
        }
    }

    /// Waits until a deferred turn is due: `retry_at_ms`, or earlier when an
    /// operator moved it. `false` when the service is draining (the turn
    /// stays in the store for the next start). Returns `true` at once when
    /// the turn was finished meanwhile (dropped by an operator): the lane
    /// then finds it final and moves on.
    async fn wait_until_due(&self, message_id: &str, mut retry_at_ms: i64) -> bool {
        loop {
            let now = crate::pipeline::turn::unix_ms();
            if now >= retry_at_ms {
                return true;
            }
            let nap = Duration::from_millis((retry_at_ms - now).clamp(1, 1000) as u64);
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                () = self.draining.cancelled() => return false,
            }
            match self.ctx.queue.turn(message_id).await {
                Ok(turn) if turn.state.is_final() => return true,
                Ok(turn) => retry_at_ms = turn.retry_at_ms.unwrap_or(retry_at_ms),
                Err(e) => {
                    tracing::warn!(wamid = message_id, error = %e, "cannot read the deferred turn")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use bytes::Bytes;

    use super::*;
    use crate::channel::{Channel, ChannelError, Content, InboundMessage, MediaDownload, Sent};
    use crate::pipeline::budget::{BudgetHandle, Budgets};
    use crate::pipeline::reply::{Reply, Respond, Said};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Inbox, Queue, StoreConfig, StoreError, Traces, Turn, TurnState};

    /// A channel that takes every text and remembers it.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Channel for Recorder {
        async fn open_media(&self, _: &str) -> Result<MediaDownload, ChannelError> {
            Err(ChannelError::Transport("no media here".into()))
        }
        async fn send_text(&self, _to: &str, text: &str) -> Result<Sent, ChannelError> {
            let mut sent = self.sent.lock().unwrap();
            sent.push(text.to_string());
            Ok(Sent {
                message_id: format!("wamid.out{}", sent.len()),
            })
        }
        async fn upload_voice(&self, _: Bytes) -> Result<String, ChannelError> {
            Err(ChannelError::Transport("no uploads here".into()))
        }
        async fn send_voice(&self, _: &str, _: &str) -> Result<Sent, ChannelError> {
            Err(ChannelError::Transport("no voice here".into()))
        }
        async fn mark_read(&self, _: &str) -> Result<(), ChannelError> {
            Ok(())
        }
    }

    /// Echoes texts, and panics on "boom", as a bug in a reply provider
    /// would.
    struct Brittle;

    #[async_trait::async_trait]
    impl Respond for Brittle {
        async fn respond(&self, _: &InboundMessage, said: &Said) -> Reply {
            match said {
                Said::Text(body) if body == "boom" => panic!("a bug met {body:?}"),
                Said::Text(body) => Reply::text(format!("echo {body}")),
                _ => Reply::text("?"),
            }
        }
    }

    /// Texts only here.
    struct NoStt;

    impl crate::stt::SpeechToText for NoStt {
        fn transcribe(
            &self,
            _: &[f32],
            _: &crate::stt::TranscribeOptions,
        ) -> Result<crate::stt::Transcript, crate::stt::SttError> {
            Err(crate::stt::SttError::Aborted)
        }
        fn name(&self) -> &str {
            "none"
        }
    }

    /// The store, except that the first `failures` `replied` writes fail.
    struct FlakyReplied {
        store: SqliteStore,
        failures: AtomicU32,
    }

    #[async_trait::async_trait]
    impl Queue for FlakyReplied {
        async fn unfinished(&self) -> Result<Vec<Turn>, StoreError> {
            self.store.unfinished().await
        }
        async fn turn(&self, id: &str) -> Result<Turn, StoreError> {
            self.store.turn(id).await
        }
        async fn advance(&self, id: &str, progress: Progress<'_>) -> Result<(), StoreError> {
            if matches!(progress, Progress::ReplyAccepted { .. })
                && self
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(StoreError::Database("disk I/O error".into()));
            }
            self.store.advance(id, progress).await
        }
        async fn last_heard(&self, customer: &str) -> Result<Option<i64>, StoreError> {
            self.store.last_heard(customer).await
        }
        async fn retry_now(&self, id: &str) -> Result<bool, StoreError> {
            self.store.retry_now(id).await
        }
    }

    fn text(id: &str, body: &str) -> InboundMessage {
        InboundMessage {
            id: id.into(),
            from: "34600000001".into(),
            to: "1".into(),
            timestamp: 0,
            profile_name: None,
            content: Content::Text { body: body.into() },
        }
    }

    fn context(
        channel: Arc<Recorder>,
        queue: Arc<dyn Queue>,
        store: &SqliteStore,
    ) -> Arc<TurnContext> {
        Arc::new(TurnContext {
            channel,
            queue,
            traces: Arc::new(store.clone()) as Arc<dyn Traces>,
            stt: Arc::new(NoStt),
            stt_fast: None,
            stt_permits: Arc::new(Semaphore::new(1)),
            respond: Arc::new(Brittle),
            tts: None,
            encode: Default::default(),
            media: Default::default(),
            fetch_retry: crate::channel::whatsapp::WhatsAppConfig::default().retry_policy(),
            mark_read: false,
            budgets: BudgetHandle::new(Budgets::default()),
            languages: vec!["en".into()],
            hearing: Default::default(),
            outbox: Default::default(),
        })
    }

    async fn wait_final(store: &SqliteStore, id: &str) -> Turn {
        for _ in 0..2000 {
            let turn = store.turn(id).await.unwrap();
            if turn.state.is_final() {
                return turn;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} did not finish");
    }

    #[tokio::test]
    async fn a_panicking_turn_fails_and_its_customer_is_still_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&StoreConfig {
            data_dir: dir.path().into(),
            ..StoreConfig::default()
        })
        .unwrap();
        let channel = Arc::new(Recorder::default());
        let ctx = context(channel.clone(), Arc::new(store.clone()), &store);
        let workers = Workers::new(ctx, 2);
        let messages = [text("wamid.1", "boom"), text("wamid.2", "still there?")];
        store.accept(&messages, &[], &[]).await.unwrap();
        for m in &messages {
            workers.submit(&m.from, m.id.clone(), None);
        }
        let boom = wait_final(&store, "wamid.1").await;
        assert_eq!(boom.state, TurnState::Failed);
        assert!(
            boom.failure.as_deref().unwrap().contains("panicked"),
            "{:?}",
            boom.failure
        );
        let next = wait_final(&store, "wamid.2").await;
        assert_eq!(next.state, TurnState::Replied);
        assert_eq!(*channel.sent.lock().unwrap(), ["echo still there?"]);
    }

    #[tokio::test]
    async fn a_failed_replied_write_is_retried_without_sending_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&StoreConfig {
            data_dir: dir.path().into(),
            ..StoreConfig::default()
        })
        .unwrap();
        let flaky = Arc::new(FlakyReplied {
            store: store.clone(),
            failures: AtomicU32::new(5),
        });
        let channel = Arc::new(Recorder::default());
        let ctx = context(channel.clone(), flaky.clone(), &store);
        let workers = Workers::new(ctx, 1);
        let m = text("wamid.3", "once please");
        store
            .accept(std::slice::from_ref(&m), &[], &[])
            .await
            .unwrap();
        workers.submit(&m.from, m.id.clone(), None);
        let turn = wait_final(&store, "wamid.3").await;
        assert_eq!(turn.state, TurnState::Replied);
        assert_eq!(
            flaky.failures.load(Ordering::SeqCst),
            0,
            "every failure met"
        );
        assert_eq!(*channel.sent.lock().unwrap(), ["echo once please"]);
    }
}
