//! Every message the sandbox saw, both ways, per customer: what the
//! simulated customers sent through the webhook and what voxline sent them
//! through the Graph API stand-in (texts, voice notes, read receipts).
//!
//! Each message gets a sequence number from one counter, so "what is new
//! since N" is one comparison for the page's polling and for the waits.
//! Bounded: a conversation keeps its last `max_messages`, and the customer
//! idle the longest is forgotten when a new one would pass `max_customers`.

use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the customer, through the webhook.
    Inbound,
    /// From voxline, through the Graph API.
    Outbound,
}

/// What a message carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        body: String,
    },
    /// A voice note (`voice: true`) or an audio file; the bytes are in the
    /// stand-in's media under `media_id` until evicted.
    Audio {
        media_id: String,
        mime_type: String,
        voice: bool,
    },
    /// A read receipt voxline sent for the customer's message `message_id`.
    Read {
        message_id: String,
    },
}

/// One message of a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    /// Position in the sandbox's one sequence, across customers.
    pub seq: u64,
    /// Unix time in ms.
    pub at_ms: u64,
    pub customer: String,
    pub direction: Direction,
    /// The message's wamid (for a read receipt: the id it marked read).
    pub id: String,
    #[serde(flatten)]
    pub content: Content,
    /// Set on an inbound message whose webhook delivery failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub at: Instant,
}

impl ChatMessage {
    /// A text or an audio message from voxline: what counts as a reply.
    pub fn is_reply(&self) -> bool {
        self.direction == Direction::Outbound && !matches!(self.content, Content::Read { .. })
    }
}

#[derive(Debug)]
pub struct Conversations {
    next_seq: u64,
    chats: HashMap<String, VecDeque<ChatMessage>>,
    /// Inbound wamid to its customer and sequence number, for the messages
    /// still kept.
    inbound: HashMap<String, (String, u64)>,
    max_customers: usize,
    max_messages: usize,
}

impl Conversations {
    pub fn new(max_customers: usize, max_messages: usize) -> Self {
        Self {
            next_seq: 1,
            chats: HashMap::new(),
            inbound: HashMap::new(),
            max_customers: max_customers.max(1),
            max_messages: max_messages.max(2),
        }
    }

    /// Appends a message to `customer`'s conversation and returns it.
    pub fn push(
        &mut self,
        customer: &str,
        direction: Direction,
        id: &str,
        content: Content,
    ) -> ChatMessage {
        if !self.chats.contains_key(customer) && self.chats.len() >= self.max_customers {
            let idle = self
                .chats
                .iter()
                .min_by_key(|(_, messages)| messages.back().map_or(0, |m| m.seq))
                .map(|(number, _)| number.clone());
            if let Some(gone) = idle.and_then(|idle| self.chats.remove(&idle)) {
                gone.iter().for_each(|m| self.forget(m));
            }
        }
        let message = ChatMessage {
            seq: self.next_seq,
            at_ms: unix_ms(),
            customer: customer.to_string(),
            direction,
            id: id.to_string(),
            content,
            error: None,
            at: Instant::now(),
        };
        self.next_seq += 1;
        if direction == Direction::Inbound {
            self.inbound
                .insert(message.id.clone(), (customer.to_string(), message.seq));
        }
        let chat = self.chats.entry(customer.to_string()).or_default();
        let dropped = (chat.len() >= self.max_messages)
            .then(|| chat.pop_front())
            .flatten();
        chat.push_back(message.clone());
        if let Some(dropped) = dropped {
            self.forget(&dropped);
        }
        message
    }

    /// Drops a message that is no longer kept from the index.
    fn forget(&mut self, m: &ChatMessage) {
        if m.direction == Direction::Inbound
            && self
                .inbound
                .get(&m.id)
                .is_some_and(|(_, seq)| *seq == m.seq)
        {
            self.inbound.remove(&m.id);
        }
    }

    /// The last sequence number handed out (0 before the first message).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// `customer`'s messages after `after`, oldest first.
    pub fn since(&self, customer: &str, after: u64) -> Vec<ChatMessage> {
        self.chats.get(customer).map_or_else(Vec::new, |chat| {
            chat.iter().filter(|m| m.seq > after).cloned().collect()
        })
    }

    /// The customer and the sequence number of the inbound message `wamid`.
    pub fn inbound(&self, wamid: &str) -> Option<(String, u64)> {
        self.inbound.get(wamid).cloned()
    }

    /// `customer`'s latest inbound message.
    pub fn last_inbound(&self, customer: &str) -> Option<&ChatMessage> {
        self.chats
            .get(customer)?
            .iter()
            .rev()
            .find(|m| m.direction == Direction::Inbound)
    }

    /// Up to `n` replies to `customer` after sequence number `after`.
    pub fn replies_after(&self, customer: &str, after: u64, n: usize) -> Vec<ChatMessage> {
        self.chats.get(customer).map_or_else(Vec::new, |chat| {
            chat.iter()
                .filter(|m| m.seq > after && m.is_reply())
                .take(n)
                .cloned()
                .collect()
        })
    }

    /// Notes on the inbound message `wamid` that its delivery failed.
    pub fn set_error(&mut self, customer: &str, wamid: &str, error: String) {
        if let Some(m) = self.chats.get_mut(customer).and_then(|chat| {
            chat.iter_mut()
                .rev()
                .find(|m| m.direction == Direction::Inbound && m.id == wamid)
        }) {
            m.error = Some(error);
        }
    }

    pub fn customers(&self) -> usize {
        self.chats.len()
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> Content {
        Content::Text { body: body.into() }
    }

    #[test]
    fn replies_are_found_after_their_inbound_message() {
        let mut c = Conversations::new(10, 10);
        c.push("1", Direction::Inbound, "wamid.A", text("hi"));
        c.push(
            "1",
            Direction::Outbound,
            "wamid.A",
            Content::Read {
                message_id: "wamid.A".into(),
            },
        );
        c.push("2", Direction::Outbound, "wamid.X", text("not yours"));
        c.push("1", Direction::Outbound, "wamid.R", text("hello"));
        let (who, seq) = c.inbound("wamid.A").unwrap();
        assert_eq!(who, "1");
        let replies = c.replies_after(&who, seq, 5);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].id, "wamid.R");
        assert_eq!(c.since("1", seq).len(), 2);
        assert_eq!(c.last_seq(), 4);
    }

    #[test]
    fn conversations_and_customers_are_capped() {
        let mut c = Conversations::new(2, 3);
        for i in 0..5 {
            c.push("1", Direction::Inbound, &format!("wamid.{i}"), text("x"));
        }
        let kept: Vec<_> = c.since("1", 0).into_iter().map(|m| m.id).collect();
        assert_eq!(kept, ["wamid.2", "wamid.3", "wamid.4"]);
        assert!(c.inbound("wamid.1").is_none());
        assert!(c.inbound("wamid.2").is_some());
        c.push("2", Direction::Inbound, "wamid.b", text("x"));
        c.push("1", Direction::Inbound, "wamid.5", text("x"));
        // "2" has been idle the longest.
        c.push("3", Direction::Inbound, "wamid.c", text("x"));
        assert_eq!(c.customers(), 2);
        assert!(c.since("2", 0).is_empty());
        assert!(c.inbound("wamid.b").is_none());
        assert_eq!(c.since("1", 0).len(), 3);
        assert_eq!(c.inbound.len(), 4);
    }

    #[test]
    fn json_shape() {
        let mut c = Conversations::new(2, 3);
        let m = c.push(
            "1",
            Direction::Outbound,
            "wamid.V",
            Content::Audio {
                media_id: "77".into(),
                mime_type: "audio/ogg".into(),
                voice: true,
            },
        );
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "audio");
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["media_id"], "77");
        assert!(v.get("error").is_none());
    }
}
