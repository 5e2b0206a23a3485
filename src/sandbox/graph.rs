//! The Graph API stand-in: the calls voxline's
//! [`GraphClient`](crate::channel::whatsapp::GraphClient) makes, answered
//! the way Meta answers them.
//!
//! - `GET /{version}/{media-id}`: the media's metadata, whose `url` is a
//!   separate, signed download URL that expires after 5 minutes, as Meta's
//!   do.
//! - `GET /download/{media-id}?expires=…&sig=…`: the bytes (bearer token
//!   required there too; an expired or forged URL is a 404).
//! - `POST /{version}/{phone-number-id}/media`: a multipart upload
//!   (`messaging_product`, `type`, `file`) of one of the audio types Meta
//!   accepts, at most 16 MB; `audio/ogg` must be Ogg/Opus.
//! - `POST /{version}/{phone-number-id}/messages`: a text (1 to 4096
//!   characters), an audio message by uploaded media id, or a read receipt;
//!   a send to a customer who has not written in the last 24 hours is
//!   refused with 131047, as outside the customer service window.
//!
//! Every call needs `Authorization: Bearer <access token>` (190 otherwise).
//! Errors are Meta's JSON, `{"error":{"message","type","code",
//! "error_data","fbtrace_id"}}`, with Meta's codes, so the client's error
//! classes and retries run as they do in production.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::conversation::{Content, Direction};
use super::media::StoredMedia;
use super::Shared;

/// How long a media URL stays valid: Meta's are good for 5 minutes.
pub const MEDIA_URL_TTL: Duration = Duration::from_secs(300);

/// Meta's limit for audio media.
pub const MAX_AUDIO_BYTES: usize = 16 * 1024 * 1024;

/// Meta's limit for a text message's body, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// The audio types Meta accepts for upload.
const AUDIO_TYPES: [&str; 5] = [
    "audio/aac",
    "audio/amr",
    "audio/mpeg",
    "audio/mp4",
    "audio/ogg",
];

/// How long after the customer's last message the business may still send
/// free-form messages: the customer service window.
const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// An error as Meta's Graph API reports it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("Invalid OAuth access token - Cannot parse access token")]
    InvalidToken,
    #[error("Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation")]
    UnknownObject { method: &'static str, id: String },
    #[error("(#100) Invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("(#131053) Media upload error: {0}")]
    MediaUpload(String),
    #[error("(#131047) Re-engagement message")]
    OutsideWindow,
    #[error("Unknown path components: {0}")]
    UnknownPath(String),
    #[error("URL signature expired")]
    UrlExpired,
}

impl GraphError {
    /// Meta's numeric error code.
    pub fn code(&self) -> i64 {
        match self {
            Self::InvalidToken => 190,
            Self::UnknownObject { .. } | Self::InvalidParameter(_) | Self::UrlExpired => 100,
            Self::MediaUpload(_) => 131_053,
            Self::OutsideWindow => 131_047,
            Self::UnknownPath(_) => 2500,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::UrlExpired => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            Self::OutsideWindow => Some(
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.".into(),
            ),
            Self::MediaUpload(reason) => Some(reason.clone()),
            _ => None,
        }
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "message": self.to_string(),
            "type": "OAuthException",
            "code": self.code(),
            "fbtrace_id": format!("Sbx{}", super::random_hex(8)),
        });
        if let Some(details) = self.details() {
            error["error_data"] = json!({"messaging_product": "whatsapp", "details": details});
        }
        (self.status(), Json(json!({ "error": error }))).into_response()
    }
}

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    let version = shared.config.version.clone();
    Router::new()
        .route(&format!("/{version}/{{id}}"), get(metadata))
        .route(&format!("/{version}/{{number}}/messages"), post(messages))
        .route(
            &format!("/{version}/{{number}}/media"),
            // Room for the multipart framing around a 16 MB file.
            post(upload).layer(DefaultBodyLimit::max(MAX_AUDIO_BYTES + 64 * 1024)),
        )
        .route("/download/{id}", get(download))
        .fallback(|uri: Uri| async move { GraphError::UnknownPath(uri.path().to_string()) })
        .with_state(shared)
}

fn authorise(shared: &Shared, headers: &HeaderMap) -> Result<(), GraphError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let want = shared.credentials.access_token.expose();
    if bool::from(given.as_bytes().ct_eq(want.as_bytes())) {
        Ok(())
    } else {
        Err(GraphError::InvalidToken)
    }
}

/// The signature of a download URL: HMAC-SHA256 of `id:expires` under the
/// sandbox's own key, so URLs need no table and cannot be made up.
fn url_signature(key: &[u8], id: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}:{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn metadata(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, GraphError> {
    authorise(&shared, &headers)?;
    let (mime_type, sha256, size) = {
        let state = shared.lock();
        let media = state
            .media
            .get(&id)
            .ok_or_else(|| GraphError::UnknownObject {
                method: "get",
                id: id.clone(),
            })?;
        (
            media.mime_type.clone(),
            hex::encode(media.sha256),
            media.bytes.len(),
        )
    };
    let expires = super::conversation::unix_ms() / 1000 + MEDIA_URL_TTL.as_secs();
    let sig = url_signature(&shared.url_key, &id, expires);
    Ok(Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("{}/download/{id}?expires={expires}&sig={sig}", shared.base_url),
        "mime_type": mime_type,
        "sha256": sha256,
        "file_size": size.to_string(),
        "id": id,
    })))
}

#[derive(Deserialize)]
struct DownloadQuery {
    #[serde(default)]
    expires: u64,
    #[serde(default)]
    sig: String,
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, GraphError> {
    authorise(&shared, &headers)?;
    let want = url_signature(&shared.url_key, &id, q.expires);
    let signed = bool::from(want.as_bytes().ct_eq(q.sig.as_bytes()));
    if !signed || q.expires < super::conversation::unix_ms() / 1000 {
        return Err(GraphError::UrlExpired);
    }
    let media = shared
        .lock()
        .media
        .get(&id)
        .cloned()
        .ok_or(GraphError::UrlExpired)?;
    Ok((
        [(header::CONTENT_TYPE, media.mime_type)],
        // Content-Length comes from the body's known size.
        media.bytes,
    )
        .into_response())
}

/// The phone number id in the path must be the sandbox business's.
fn check_number(shared: &Shared, number: &str) -> Result<(), GraphError> {
    if number == shared.credentials.phone_number_id {
        Ok(())
    } else {
        Err(GraphError::UnknownObject {
            method: "post",
            id: number.to_string(),
        })
    }
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, GraphError> {
    authorise(&shared, &headers)?;
    check_number(&shared, &number)?;
    let mut form = form.map_err(|e| GraphError::InvalidParameter(e.body_text()))?;
    let mut product = None;
    let mut declared_type = None;
    let mut file: Option<(Option<String>, Bytes)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(GraphError::MediaUpload(
                    "audio files are at most 16 MB".into(),
                ))
            }
            Err(e) => return Err(GraphError::InvalidParameter(e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let content_type = field.content_type().map(str::to_string);
        let data = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                GraphError::MediaUpload("audio files are at most 16 MB".into())
            } else {
                GraphError::InvalidParameter(e.body_text())
            }
        })?;
        match name.as_str() {
            "messaging_product" => product = Some(String::from_utf8_lossy(&data).into_owned()),
            "type" => declared_type = Some(String::from_utf8_lossy(&data).into_owned()),
            "file" => file = Some((content_type, data)),
            _ => {}
        }
    }
    if product.as_deref() != Some("whatsapp") {
        return Err(GraphError::InvalidParameter(
            "messaging_product is required and must be \"whatsapp\"".into(),
        ));
    }
    let Some((file_type, bytes)) = file else {
        return Err(GraphError::InvalidParameter("file is required".into()));
    };
    let mime = file_type
        .or(declared_type)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let base = mime.split(';').next().unwrap_or_default().trim();
    if !AUDIO_TYPES.contains(&base) {
        return Err(GraphError::MediaUpload(format!(
            "{mime:?} is not a supported audio type"
        )));
    }
    if bytes.is_empty() {
        return Err(GraphError::MediaUpload("the file is empty".into()));
    }
    if bytes.len() > MAX_AUDIO_BYTES {
        return Err(GraphError::MediaUpload(
            "audio files are at most 16 MB".into(),
        ));
    }
    // Meta takes audio/ogg with the Opus codec only: the first Ogg page's
    // packet must be the OpusHead (RFC 7845 §5.1).
    let ogg_opus = bytes.starts_with(b"OggS") && bytes.get(28..36) == Some(b"OpusHead");
    if base == "audio/ogg" && !ogg_opus {
        return Err(GraphError::MediaUpload(
            "audio/ogg must be Ogg with the Opus codec".into(),
        ));
    }
    let id = shared.media_id();
    if !shared
        .lock()
        .media
        .insert(id.clone(), StoredMedia::new(bytes, base))
    {
        return Err(GraphError::MediaUpload(
            "the sandbox's media store is smaller than this file".into(),
        ));
    }
    Ok(Json(json!({ "id": id })))
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, GraphError> {
    authorise(&shared, &headers)?;
    check_number(&shared, &number)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| GraphError::InvalidParameter(format!("the body is not JSON: {e}")))?;
    if v["messaging_product"] != "whatsapp" {
        return Err(GraphError::InvalidParameter(
            "messaging_product is required and must be \"whatsapp\"".into(),
        ));
    }
    if v["status"] == "read" {
        return mark_read(&shared, &v);
    }
    if !(v["recipient_type"].is_null() || v["recipient_type"] == "individual") {
        return Err(GraphError::InvalidParameter(
            "recipient_type must be \"individual\"".into(),
        ));
    }
    let to = v["to"]
        .as_str()
        .and_then(super::customer::normalise_number)
        .ok_or_else(|| GraphError::InvalidParameter("to must be a phone number".into()))?;
    let content = match v["type"].as_str().unwrap_or("text") {
        "text" => {
            let body = v["text"]["body"].as_str().unwrap_or_default();
            let chars = body.chars().count();
            if body.trim().is_empty() || chars > MAX_TEXT_CHARS {
                return Err(GraphError::InvalidParameter(format!(
                    "text.body must hold 1 to {MAX_TEXT_CHARS} characters, not {chars}"
                )));
            }
            Content::Text {
                body: body.to_string(),
            }
        }
        "audio" => {
            if !v["audio"]["link"].is_null() {
                return Err(GraphError::InvalidParameter(
                    "audio.link: the sandbox takes uploaded media ids only".into(),
                ));
            }
            let media_id = v["audio"]["id"].as_str().unwrap_or_default();
            let mime_type = shared
                .lock()
                .media
                .get(media_id)
                .map(|m| m.mime_type.clone())
                .ok_or_else(|| {
                    GraphError::MediaUpload(format!("no uploaded media with id {media_id:?}"))
                })?;
            Content::Audio {
                media_id: media_id.to_string(),
                mime_type,
                voice: v["audio"]["voice"] == true,
            }
        }
        other => {
            return Err(GraphError::InvalidParameter(format!(
                "type {other:?} is not one the sandbox takes (text, audio)"
            )))
        }
    };
    let wamid = shared.wamid();
    {
        let mut state = shared.lock();
        let in_window = state
            .chats
            .last_inbound(&to)
            .is_some_and(|m| m.at.elapsed() < SERVICE_WINDOW);
        if !in_window {
            return Err(GraphError::OutsideWindow);
        }
        state.chats.push(&to, Direction::Outbound, &wamid, content);
    }
    shared.changed();
    Ok(Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": to, "wa_id": to }],
        "messages": [{ "id": wamid }],
    })))
}

/// `{"status":"read","message_id":…}`: a read receipt for one of the
/// customer's messages (a `typing_indicator` beside it is accepted).
fn mark_read(shared: &Shared, v: &Value) -> Result<Json<Value>, GraphError> {
    let message_id = v["message_id"]
        .as_str()
        .ok_or_else(|| GraphError::InvalidParameter("message_id is required".into()))?;
    {
        let mut state = shared.lock();
        let (customer, _) = state.chats.inbound(message_id).ok_or_else(|| {
            GraphError::InvalidParameter(format!("no message {message_id:?} to mark read"))
        })?;
        state.chats.push(
            &customer,
            Direction::Outbound,
            message_id,
            Content::Read {
                message_id: message_id.to_string(),
            },
        );
    }
    shared.changed();
    Ok(Json(json!({ "success": true })))
}

/// base64 of a SHA-256, as Meta writes it in webhooks.
pub fn sha256_base64(digest: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}
