//! Meta's webhook payload, as documented for the WhatsApp Cloud API:
//! `{"object":"whatsapp_business_account","entry":[{"changes":[{"field":
//! "messages","value":{…}}]}]}`, where a value holds `metadata`,
//! `contacts[]`, `messages[]`, `statuses[]` and `errors[]`.
//!
//! Parsing is lenient where Meta is inconsistent (timestamps come as strings,
//! fields appear and disappear between API versions) and strict where voxline
//! depends on a field: a message without an id or a sender is skipped, never
//! guessed.

use serde::Deserialize;

use crate::channel::{Content, InboundMessage, StatusUpdate};

#[derive(Debug, Deserialize)]
pub struct Notification {
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
pub struct Change {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Default, Deserialize)]
pub struct Value {
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub contacts: Vec<Contact>,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub statuses: Vec<Status>,
    #[serde(default)]
    pub errors: Vec<ApiError>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub display_phone_number: String,
    #[serde(default)]
    pub phone_number_id: String,
}

#[derive(Debug, Deserialize)]
pub struct Contact {
    #[serde(default)]
    pub wa_id: String,
    pub profile: Option<Profile>,
}

#[derive(Debug, Deserialize)]
pub struct Profile {
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub timestamp: Option<serde_json::Value>,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub text: Option<Text>,
    pub audio: Option<Audio>,
    pub interactive: Option<Interactive>,
    /// A tap on a template's quick-reply button.
    pub button: Option<Button>,
}

#[derive(Debug, Deserialize)]
pub struct Text {
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Deserialize)]
pub struct Audio {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub mime_type: String,
    pub sha256: Option<String>,
    #[serde(default)]
    pub voice: bool,
}

#[derive(Debug, Deserialize)]
pub struct Interactive {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub button_reply: Option<Reply>,
    pub list_reply: Option<Reply>,
}

#[derive(Debug, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
}

#[derive(Debug, Deserialize)]
pub struct Button {
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub recipient_id: String,
    pub timestamp: Option<serde_json::Value>,
    #[serde(default)]
    pub errors: Vec<ApiError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub message: String,
}

/// What one webhook delivery carried, in voxline's terms.
#[derive(Debug, Default)]
pub struct Delivery {
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<StatusUpdate>,
    /// Errors Meta reported about the webhook or the account, as
    /// `(code, title)`.
    pub errors: Vec<(i64, String)>,
    /// Messages addressed to another business number, or without an id or
    /// sender, and so skipped.
    pub skipped: usize,
}

/// The product name Meta puts in `object` for WhatsApp webhooks.
pub const OBJECT: &str = "whatsapp_business_account";

impl Notification {
    /// Flattens the notification, keeping the messages addressed to
    /// `phone_number_id`.
    pub fn into_delivery(self, phone_number_id: &str) -> Delivery {
        let mut out = Delivery::default();
        if self.object != OBJECT {
            return out;
        }
        for change in self.entry.into_iter().flat_map(|e| e.changes) {
            let value = change.value;
            out.errors
                .extend(value.errors.iter().map(|e| (e.code, e.title.clone())));
            let ours = value.metadata.phone_number_id == phone_number_id;
            for status in value.statuses {
                if !ours || status.id.is_empty() {
                    out.skipped += 1;
                    continue;
                }
                out.statuses.push(StatusUpdate {
                    message_id: status.id,
                    status: status.status,
                    recipient: status.recipient_id,
                    timestamp: seconds(status.timestamp.as_ref()),
                    error: status.errors.first().map(|e| (e.code, e.title.clone())),
                });
            }
            for message in value.messages {
                if !ours || message.id.is_empty() || message.from.is_empty() {
                    out.skipped += 1;
                    continue;
                }
                let profile_name = value
                    .contacts
                    .iter()
                    .find(|c| c.wa_id == message.from)
                    .or(value.contacts.first())
                    .and_then(|c| c.profile.as_ref()?.name.clone());
                out.messages.push(InboundMessage {
                    timestamp: seconds(message.timestamp.as_ref()),
                    content: content(&message),
                    id: message.id,
                    from: message.from,
                    to: value.metadata.phone_number_id.clone(),
                    profile_name,
                });
            }
        }
        out
    }
}

fn content(message: &Message) -> Content {
    let unsupported = || Content::Unsupported {
        kind: if message.kind.is_empty() {
            "unknown".into()
        } else {
            message.kind.clone()
        },
    };
    match message.kind.as_str() {
        "audio" => match &message.audio {
            Some(a) if !a.id.is_empty() => Content::Audio {
                media_id: a.id.clone(),
                mime_type: a.mime_type.clone(),
                sha256: a.sha256.clone().filter(|s| !s.is_empty()),
                voice: a.voice,
            },
            _ => unsupported(),
        },
        "text" => match &message.text {
            Some(t) => Content::Text {
                body: t.body.clone(),
            },
            None => unsupported(),
        },
        "interactive" => match &message.interactive {
            Some(i) => match i.button_reply.as_ref().or(i.list_reply.as_ref()) {
                Some(r) => Content::Choice {
                    id: r.id.clone(),
                    title: r.title.clone(),
                },
                None => Content::Unsupported {
                    kind: format!("interactive/{}", i.kind),
                },
            },
            None => unsupported(),
        },
        "button" => match &message.button {
            Some(b) => Content::Choice {
                id: b.payload.clone(),
                title: b.text.clone(),
            },
            None => unsupported(),
        },
        _ => unsupported(),
    }
}

/// Meta sends Unix seconds as a string; accept a number too.
fn seconds(v: Option<&serde_json::Value>) -> u64 {
    match v {
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Delivery {
        serde_json::from_str::<Notification>(json)
            .unwrap()
            .into_delivery("106540352242922")
    }

    fn wrap(value: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{value}}}]}}]}}"#
        )
    }

    const META: &str = r#""messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}"#;

    #[test]
    fn voice_note() {
        let d = parse(&wrap(&format!(
            r#"{{{META},"contacts":[{{"profile":{{"name":"Kerry Fisher"}},"wa_id":"16315551181"}}],
            "messages":[{{"from":"16315551181","id":"wamid.A1","timestamp":"1744344496","type":"audio",
            "audio":{{"mime_type":"audio/ogg; codecs=opus","sha256":"abc=","id":"1003383421387256","voice":true}}}}]}}"#
        )));
        assert_eq!(d.messages.len(), 1);
        let m = &d.messages[0];
        assert_eq!(m.id, "wamid.A1");
        assert_eq!(m.from, "16315551181");
        assert_eq!(m.timestamp, 1_744_344_496);
        assert_eq!(m.profile_name.as_deref(), Some("Kerry Fisher"));
        assert_eq!(
            m.content,
            Content::Audio {
                media_id: "1003383421387256".into(),
                mime_type: "audio/ogg; codecs=opus".into(),
                sha256: Some("abc=".into()),
                voice: true
            }
        );
    }

    #[test]
    fn interactive_replies_and_unknown_types() {
        let d = parse(&wrap(&format!(
            r#"{{{META},"messages":[
            {{"from":"1","id":"wamid.B","timestamp":"1","type":"interactive","interactive":{{"type":"button_reply","button_reply":{{"id":"yes-1","title":"Yes"}}}}}},
            {{"from":"1","id":"wamid.L","timestamp":"1","type":"interactive","interactive":{{"type":"list_reply","list_reply":{{"id":"row-2","title":"Blue","description":"d"}}}}}},
            {{"from":"1","id":"wamid.S","timestamp":"1","type":"sticker","sticker":{{"id":"9","mime_type":"image/webp"}}}},
            {{"from":"1","type":"text","text":{{"body":"no id"}}}}]}}"#
        )));
        let kinds: Vec<_> = d.messages.iter().map(|m| m.content.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Content::Choice {
                    id: "yes-1".into(),
                    title: "Yes".into()
                },
                Content::Choice {
                    id: "row-2".into(),
                    title: "Blue".into()
                },
                Content::Unsupported {
                    kind: "sticker".into()
                },
            ]
        );
        assert_eq!(d.skipped, 1);
    }

    #[test]
    fn statuses_and_errors() {
        let d = parse(&wrap(&format!(
            r#"{{{META},"statuses":[
            {{"id":"wamid.X","status":"delivered","timestamp":"1750263773","recipient_id":"16315551181"}},
            {{"id":"wamid.Y","status":"failed","timestamp":"1750263774","recipient_id":"16315551181",
              "errors":[{{"code":131047,"title":"Re-engagement message","message":"Re-engagement message","error_data":{{"details":"more than 24 hours"}}}}]}}],
            "errors":[{{"code":131000,"title":"Something went wrong"}}]}}"#
        )));
        assert_eq!(d.statuses.len(), 2);
        assert_eq!(d.statuses[0].status, "delivered");
        assert_eq!(
            d.statuses[1].error,
            Some((131_047, "Re-engagement message".into()))
        );
        assert_eq!(d.errors, vec![(131_000, "Something went wrong".into())]);
    }

    #[test]
    fn other_numbers_and_objects_are_ignored() {
        let other = wrap(
            r#"{"metadata":{"phone_number_id":"999"},"messages":[{"from":"1","id":"wamid.Z","type":"text","text":{"body":"hi"}}]}"#,
        );
        let d = parse(&other);
        assert!(d.messages.is_empty());
        assert_eq!(d.skipped, 1);
        let d = parse(r#"{"object":"page","entry":[]}"#);
        assert!(d.messages.is_empty());
    }
}
