//! The worker pool: turns in order per customer, many customers at once.
//!
//! Each customer with messages waiting has a lane, a FIFO of message ids
//! served by one task, so a customer's turns run one at a time in the order
//! they arrived. Lanes run in parallel, bounded by a semaphore of
//! `[service] workers` permits held for the length of a turn. A lane holds
//! only ids: the messages themselves are in the store.
//!
//! Draining (SIGTERM) stops lanes from starting turns, waits for the turns
//! in flight up to a deadline, then drops what is left; an unfinished turn
//! keeps its state in the store and resumes on the next start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pipeline::turn::{run_turn, Arrival, TurnContext};

/// Tries of a turn whose store write failed, before its lane moves on.
const STORE_RETRIES: u32 = 3;

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
}

/// What a drain left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Turns still running at the deadline, dropped and left for the next start.
    pub abandoned: bool,
}

impl Workers {
    pub fn new(ctx: Arc<TurnContext>, workers: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx,
                lanes: Mutex::new(HashMap::new()),
                permits: Semaphore::new(workers.max(1)),
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
                abort: CancellationToken::new(),
            }),
        }
    }

    /// Queues message `message_id` from `customer` behind that customer's
    /// earlier messages. Does not wait.
    /// `arrival` is when its webhook came in (none for a resumed turn).
    pub fn submit(&self, customer: &str, message_id: String, arrival: Option<Arrival>) {
        if self.inner.draining.is_cancelled() {
            // It is in the store; the next start picks it up.
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

impl Inner {
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
            if self.draining.is_cancelled() {
                return;
            }
            let permit = tokio::select! {
                p = self.permits.acquire() => p,
                () = self.draining.cancelled() => return,
            };
            let Ok(_permit) = permit else { return };
            let metrics = crate::metrics::global();
            metrics.queue_depth().dec();
            metrics.in_flight().inc();
            let aborted = tokio::select! {
                () = self.turn(&message_id, arrival) => false,
                () = self.abort.cancelled() => true,
            };
            metrics.in_flight().dec();
            if aborted {
                return;
            }
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(lane) = lanes.get_mut(&customer) {
                lane.pop_front();
            }
        }
    }

    async fn turn(&self, message_id: &str, arrival: Option<Arrival>) {
        for attempt in 1..=STORE_RETRIES {
            // A retry's wait is the turn's too: keep its zero.
            match run_turn(&self.ctx, message_id, arrival).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(wamid = message_id, attempt, error = %e, "turn stopped by a store error");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
            }
        }
        tracing::error!(
            wamid = message_id,
            "turn left unfinished; it resumes on the next start"
        );
    }
}
