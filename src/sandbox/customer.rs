//! What a simulated customer's message looks like on the wire: the webhook
//! notification Meta would POST for it, in the documented shape
//! (`entry[].changes[].value` with `metadata`, `contacts` and `messages`).
//! Signing and sending are in [`super::Sandbox`].

use serde_json::{json, Value};

/// The business side of the sandbox, as a notification names it.
#[derive(Debug, Clone)]
pub struct Business {
    /// The WhatsApp Business Account id (`entry[].id`).
    pub account_id: String,
    pub phone_number_id: String,
    pub display_phone_number: String,
}

/// A customer's message, before it is wrapped in a notification.
#[derive(Debug, Clone)]
pub enum Said<'a> {
    Text(&'a str),
    Audio {
        media_id: &'a str,
        mime_type: &'a str,
        /// base64 of the file's SHA-256, as Meta puts it in webhooks.
        sha256: &'a str,
        voice: bool,
    },
}

/// The notification for one message `wamid` from `from`.
pub fn notification(
    business: &Business,
    wamid: &str,
    from: &str,
    profile_name: &str,
    timestamp: u64,
    said: &Said<'_>,
) -> Value {
    let mut message = json!({
        "from": from,
        "id": wamid,
        // Meta sends Unix seconds as a string.
        "timestamp": timestamp.to_string(),
    });
    match said {
        Said::Text(body) => {
            message["type"] = json!("text");
            message["text"] = json!({ "body": body });
        }
        Said::Audio {
            media_id,
            mime_type,
            sha256,
            voice,
        } => {
            message["type"] = json!("audio");
            message["audio"] = json!({
                "mime_type": mime_type,
                "sha256": sha256,
                "id": media_id,
                "voice": voice,
            });
        }
    }
    json!({
        "object": crate::channel::whatsapp::payload::OBJECT,
        "entry": [{
            "id": business.account_id,
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": business.display_phone_number,
                        "phone_number_id": business.phone_number_id,
                    },
                    "contacts": [{ "profile": { "name": profile_name }, "wa_id": from }],
                    "messages": [message],
                }
            }]
        }]
    })
}

/// A WhatsApp number as a customer's `from`: digits only, 6 to 15 of them
/// (E.164 without the `+`). A leading `+` and spaces are dropped.
pub fn normalise_number(number: &str) -> Option<String> {
    let digits: String = number
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    let ok = (6..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
    ok.then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::whatsapp::payload::Notification;
    use crate::channel::Content;

    fn business() -> Business {
        Business {
            account_id: "102290129340398".into(),
            phone_number_id: "106540352242922".into(),
            display_phone_number: "15550783881".into(),
        }
    }

    /// The notification parses, with voxline's own parser, into the message
    /// that was said.
    #[test]
    fn notifications_parse_back() {
        let voice = Said::Audio {
            media_id: "1003383421387256",
            mime_type: "audio/ogg; codecs=opus",
            sha256: "abc=",
            voice: true,
        };
        let n = notification(&business(), "wamid.A1", "15550001842", "Maria", 17, &voice);
        let n: Notification = serde_json::from_value(n).unwrap();
        let d = n.into_delivery("106540352242922");
        assert_eq!(d.messages.len(), 1);
        let m = &d.messages[0];
        assert_eq!(
            (m.id.as_str(), m.from.as_str()),
            ("wamid.A1", "15550001842")
        );
        assert_eq!(m.timestamp, 17);
        assert_eq!(m.profile_name.as_deref(), Some("Maria"));
        assert_eq!(
            m.content,
            Content::Audio {
                media_id: "1003383421387256".into(),
                mime_type: "audio/ogg; codecs=opus".into(),
                sha256: Some("abc=".into()),
                voice: true,
            }
        );

        let n = notification(&business(), "wamid.T", "1555", "M", 1, &Said::Text("hi"));
        let d = serde_json::from_value::<Notification>(n)
            .unwrap()
            .into_delivery("106540352242922");
        assert_eq!(d.messages[0].content, Content::Text { body: "hi".into() });
    }

    #[test]
    fn numbers() {
        assert_eq!(
            normalise_number("+1 555 000-1842").as_deref(),
            Some("15550001842")
        );
        assert_eq!(normalise_number("12345"), None);
        assert_eq!(normalise_number("1555abc1842"), None);
        assert_eq!(normalise_number("1234567890123456"), None);
    }
}
