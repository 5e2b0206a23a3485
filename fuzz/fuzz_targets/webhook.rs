//! Meta's webhook body, after the signature check: any bytes either fail
//! to parse as a `Notification` (the webhook answers 400) or flatten into a
//! `Delivery` whose counts add up and whose messages all have an id, a
//! sender and our number. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxline::channel::whatsapp::payload::{Notification, OBJECT};
use voxline::channel::Content;

/// The business number the seeds are addressed to.
const PHONE_NUMBER_ID: &str = "106540352242922";

fuzz_target!(init: voxline_fuzz::init(), |data: &[u8]| {
    let Ok(notification) = serde_json::from_slice::<Notification>(data) else {
        return;
    };
    let ours = notification.object == OBJECT;
    let values = || notification.entry.iter().flat_map(|e| &e.changes).map(|c| &c.value);
    let messages: usize = values().map(|v| v.messages.len()).sum();
    let statuses: usize = values().map(|v| v.statuses.len()).sum();
    let errors: usize = values().map(|v| v.errors.len()).sum();

    let delivery = notification.into_delivery(PHONE_NUMBER_ID);
    if !ours {
        assert!(delivery.messages.is_empty() && delivery.statuses.is_empty());
        assert!(delivery.errors.is_empty() && delivery.skipped == 0);
        return;
    }
    assert_eq!(
        delivery.messages.len() + delivery.statuses.len() + delivery.skipped,
        messages + statuses
    );
    assert_eq!(delivery.errors.len(), errors);
    for m in &delivery.messages {
        assert!(!m.id.is_empty() && !m.from.is_empty());
        assert_eq!(m.to, PHONE_NUMBER_ID);
        if let Content::Audio { media_id, .. } = &m.content {
            assert!(!media_id.is_empty());
        }
    }
    assert!(delivery.statuses.iter().all(|s| !s.message_id.is_empty()));
});
