//! The fetch stage: a voice note's media, downloaded from the channel and
//! decoded as it arrives, to prepared 16 kHz speech.
//!
//! The download runs on the turn's task and hands each chunk over a small
//! bounded channel to a blocking thread that drives
//! [`StreamDecoder`](crate::media::decode::StreamDecoder) and
//! [`StreamResampler`](crate::media::resample::StreamResampler), so fetching
//! and decoding overlap and at most a few chunks wait in memory. A cut,
//! expired or corrupted download starts over from a freshly opened media URL,
//! with the channel's retry policy; a file that is not audio we can decode is
//! not retried.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::trace::{Stage, Trace};
use crate::channel::{Channel, ChannelError, RetryPolicy};
use crate::media::{MediaConfig, MediaError, NoteBuilder, PreparedNote};

/// Chunks in flight between the download and the decoder.
const CHUNKS_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The channel could not deliver the media, after the retries allowed.
    #[error("could not fetch the note: {0}")]
    Channel(#[from] ChannelError),
    /// The bytes arrived but are not a note we can decode.
    #[error("could not decode the note: {0}")]
    Media(#[from] MediaError),
}

/// Downloads `media_id` and decodes it while it arrives; `downloaded` is
/// set when the last byte is in (what is left is decoding). Records the
/// download as [`Stage::Fetch`] and the CPU time of decoding and resampling
/// (which overlapped it) as [`Stage::Decode`] and [`Stage::Resample`].
pub async fn fetch_note(
    channel: &dyn Channel,
    media_id: &str,
    config: &MediaConfig,
    retry: &RetryPolicy,
    trace: &mut Trace,
    downloaded: &OnceLock<Instant>,
) -> Result<PreparedNote, FetchError> {
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let (error, class) = match fetch_once(channel, media_id, config, downloaded).await {
            Ok((note, fetched)) => {
                trace.record(Stage::Fetch, started, fetched);
                let t = note.timings;
                trace.record(Stage::Decode, started, started + t.decode);
                trace.record(Stage::Resample, started, started + t.resample + t.prepare);
                return Ok(note);
            }
            // A cut download that the channel could not notice (no length
            // announced) shows up as a truncated container: fetch it again.
            Err(e @ FetchError::Media(MediaError::Truncated { .. })) => (
                e,
                ChannelError::MediaCut {
                    got: 0,
                    expected: 0,
                },
            ),
            Err(FetchError::Channel(e)) => (FetchError::Channel(e.clone()), e),
            Err(e @ FetchError::Media(_)) => return Err(e),
        };
        let Some(wait) = retry.next_wait(&class, attempt) else {
            return Err(error);
        };
        tracing::warn!(attempt, error = %error, "fetching the note failed; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

async fn fetch_once(
    channel: &dyn Channel,
    media_id: &str,
    config: &MediaConfig,
    downloaded: &OnceLock<Instant>,
) -> Result<(PreparedNote, Instant), FetchError> {
    let download = channel.open_media(media_id).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let decode_config = config.clone();
    let decoder = tokio::task::spawn_blocking(move || decode_stream(rx, &decode_config));
    let mut chunks = download.chunks;
    let mut failed = None;
    while let Some(item) = chunks.next().await {
        match item {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    // The decoder stopped on bad input; its error says why.
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let fetched = Instant::now();
    if failed.is_none() {
        let _ = downloaded.set(fetched);
    }
    drop(tx);
    let decoded = decoder.await.map_err(|e| MediaError::Codec {
        format: "note",
        reason: format!("decoder thread failed: {e}"),
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok((decoded?, fetched))
}

/// The blocking half: chunks in, prepared speech out.
fn decode_stream(
    mut rx: mpsc::Receiver<Bytes>,
    config: &MediaConfig,
) -> Result<PreparedNote, MediaError> {
    let mut note = NoteBuilder::new(config);
    while let Some(chunk) = rx.blocking_recv() {
        note.push(&chunk)?;
    }
    note.finish()
}
