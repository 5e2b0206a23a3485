//! Every format other than Ogg/Opus, decoded by symphonia.
//!
//! Formats that can be read front to back (MP3, ADTS AAC, WAV, FLAC, Ogg
//! Vorbis and Ogg FLAC) stream: symphonia runs on a worker thread and reads
//! chunks from a channel as they are pushed, and its PCM comes back on
//! another channel. MP4 keeps its index (`moov`) wherever the muxer put it,
//! often after the audio, so it is buffered and decoded at the end.
//!
//! symphonia can panic on some malformed input; every call into it runs under
//! `catch_unwind` and a panic becomes [`MediaError::Malformed`].

use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::{Limit, MetadataOptions};
use symphonia::core::probe::Hint;

use super::guard::{self, Verdict};
use super::mp4::EditList;
use crate::media::{AudioFormat, MediaError, Pcm};

/// What the decoder learned besides the samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub sample_rate: u32,
    pub channels: u16,
    pub capped: bool,
}

/// How much to decode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Stop after this much audio, in milliseconds.
    pub max_ms: u64,
    /// Whether to compare the decoded length with the length the container
    /// declares, and call a shortfall [`MediaError::Truncated`].
    pub check_length: bool,
}

/// A symphonia decode running on a worker thread, fed chunk by chunk.
pub(crate) struct Streaming {
    format: AudioFormat,
    chunks: Option<mpsc::Sender<Vec<u8>>>,
    pcm: mpsc::Receiver<Pcm>,
    worker: Option<JoinHandle<Result<Outcome, MediaError>>>,
    /// The worker's result, if it ended before `finish`.
    ended: Option<Result<Outcome, MediaError>>,
    /// The first bytes, held back from symphonia until the lengths their
    /// headers declare are checked (`guard`); `None` once passed on.
    held: Option<Vec<u8>>,
    /// Held bytes at which to check again: checking each time the held
    /// bytes double keeps the work linear in the header's size.
    check_at: usize,
}

impl Streaming {
    pub(crate) fn start(format: AudioFormat, limits: Limits) -> Result<Self, MediaError> {
        let (chunk_tx, chunk_rx) = mpsc::channel::<Vec<u8>>();
        let (pcm_tx, pcm_rx) = mpsc::channel();
        let source = ChannelSource {
            chunks: Mutex::new(chunk_rx),
            current: Vec::new(),
            at: 0,
        };
        let worker = std::thread::Builder::new()
            .name("voxline-decode".into())
            .spawn(move || {
                let mut emit = |pcm: Pcm| {
                    // The receiver is gone only when the note was abandoned.
                    let _ = pcm_tx.send(pcm);
                };
                run(format, Box::new(source), limits, None, &mut emit)
            })
            .map_err(|e| MediaError::Codec {
                format: format.name(),
                reason: format!("cannot start the decoder thread: {e}"),
            })?;
        Ok(Self {
            format,
            chunks: Some(chunk_tx),
            pcm: pcm_rx,
            worker: Some(worker),
            ended: None,
            held: matches!(
                format,
                AudioFormat::Flac | AudioFormat::OggVorbis | AudioFormat::OggFlac
            )
            .then(Vec::new),
            check_at: 0,
        })
    }

    /// Hands a chunk to the worker. Memory is bounded by the caller's input
    /// limit, so the channel need not be.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), MediaError> {
        if let Some(Err(e)) = &self.ended {
            return Err(e.clone());
        }
        if self.worker.as_ref().is_some_and(|w| w.is_finished()) {
            let result = self.join();
            if let Err(e) = &result {
                self.ended = Some(result.clone());
                return Err(e.clone());
            }
            self.ended = Some(result);
        }
        let Some(held) = &mut self.held else {
            self.send(chunk.to_vec());
            return Ok(());
        };
        held.extend_from_slice(chunk);
        if held.len() < self.check_at {
            return Ok(());
        }
        match guard::streamed_headers(self.format, held) {
            Verdict::NeedMore => {
                self.check_at = held.len().saturating_mul(2);
                Ok(())
            }
            Verdict::Fine => {
                let held = std::mem::take(held);
                self.held = None;
                self.send(held);
                Ok(())
            }
            refused @ Verdict::Refuse(_) => {
                let error = refused.at_end(self.format).unwrap_err();
                self.ended = Some(Err(error.clone()));
                Err(error)
            }
        }
    }

    fn send(&self, bytes: Vec<u8>) {
        if let Some(chunks) = &self.chunks {
            // A worker that stopped (length cap reached) no longer reads.
            let _ = chunks.send(bytes);
        }
    }

    /// PCM decoded so far.
    pub(crate) fn take(&mut self) -> Option<Pcm> {
        concat(self.pcm.try_iter())
    }

    /// Closes the input and waits for the worker.
    pub(crate) fn finish(mut self) -> Result<(Option<Pcm>, Outcome), MediaError> {
        if let Some(held) = self.held.take() {
            guard::streamed_headers(self.format, &held).at_end(self.format)?;
            self.send(held);
        }
        self.chunks = None;
        let outcome = match self.ended.take() {
            Some(result) => result,
            None => self.join(),
        }?;
        Ok((concat(self.pcm.try_iter()), outcome))
    }

    fn join(&mut self) -> Result<Outcome, MediaError> {
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(panicked(self.format)),
            None => Err(MediaError::Codec {
                format: self.format.name(),
                reason: "the decoder thread is gone".into(),
            }),
        }
    }
}

impl Drop for Streaming {
    /// A decode abandoned before `finish` (a refused header, the caller's
    /// error) closes the worker's input and waits for it: it reads to the
    /// end of what it was given, within the decode limits, and stops, so no
    /// thread outlives its note (the fuzzer's LeakSanitizer saw the
    /// worker's thread-local state still alive after such a note).
    fn drop(&mut self) {
        self.chunks = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Decodes a whole buffered note.
pub(crate) fn decode_buffered(
    format: AudioFormat,
    bytes: Vec<u8>,
    limits: Limits,
) -> Result<(Option<Pcm>, Outcome), MediaError> {
    let edits = match format {
        AudioFormat::Mp4 => {
            guard::mp4(&bytes)?;
            EditList::read(&bytes)
        }
        _ => None,
    };
    let mut parts = Vec::new();
    let outcome = run(
        format,
        Box::new(Cursor::new(bytes)),
        limits,
        edits,
        &mut |pcm| parts.push(pcm),
    )?;
    Ok((concat(parts), outcome))
}

fn concat(parts: impl IntoIterator<Item = Pcm>) -> Option<Pcm> {
    let mut parts = parts.into_iter();
    let mut first = parts.next()?;
    for part in parts {
        first.samples.extend_from_slice(&part.samples);
    }
    Some(first)
}

fn panicked(format: AudioFormat) -> MediaError {
    MediaError::malformed(format.name(), "the decoder gave up on the input (panic)")
}

/// Runs symphonia over `source`, handing PCM to `emit` in batches.
fn run(
    format: AudioFormat,
    source: Box<dyn MediaSource>,
    limits: Limits,
    edits: Option<EditList>,
    emit: &mut dyn FnMut(Pcm),
) -> Result<Outcome, MediaError> {
    catch_unwind(AssertUnwindSafe(|| {
        decode(format, source, limits, edits, emit)
    }))
    .unwrap_or_else(|_| Err(panicked(format)))
}

fn decode(
    format: AudioFormat,
    source: Box<dyn MediaSource>,
    limits: Limits,
    edits: Option<EditList>,
    emit: &mut dyn FnMut(Pcm),
) -> Result<Outcome, MediaError> {
    let name = format.name();
    let error = |e| symphonia_error(name, e);
    let stream = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    hint.with_extension(match format {
        AudioFormat::Mp3 => "mp3",
        AudioFormat::Aac => "aac",
        AudioFormat::Mp4 => "m4a",
        AudioFormat::Wav => "wav",
        AudioFormat::Flac => "flac",
        AudioFormat::OggOpus | AudioFormat::OggVorbis | AudioFormat::OggFlac => "ogg",
    });
    let format_options = FormatOptions {
        // Trims MP3 encoder delay and padding (LAME tag) and Vorbis's
        // granule-declared end, as ffmpeg does.
        enable_gapless: true,
        ..Default::default()
    };
    // Tags and cover art are never read; do not keep them.
    let metadata_options = MetadataOptions {
        limit_metadata_bytes: Limit::Maximum(64 * 1024),
        limit_visual_bytes: Limit::Maximum(0),
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &format_options, &metadata_options)
        .map_err(error)?;
    let mut reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| MediaError::malformed(name, "no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(error)?;

    let mut sample_rate = params.sample_rate;
    let mut channels = params.channels.map(|c| c.count() as u16);
    let max_frames = |rate: u32| limits.max_ms.saturating_mul(u64::from(rate)) / 1000;
    let mut skip = 0u64;
    let mut keep = u64::MAX;
    if let (Some(edits), Some(rate)) = (edits, sample_rate) {
        (skip, keep) = edits.frames_at(rate);
    }

    let mut decoded = 0u64; // frames after edits
    let mut good_packets = 0u64;
    let mut first_bad_packet = None;
    let mut capped = false;
    let mut batch: Vec<f32> = Vec::new();
    let mut samples: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match reader.next_packet() {
            Ok(packet) => packet,
            // symphonia reports the end of the input as an unexpected EOF.
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            // A new chained stream starts: one note is one stream.
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(error(e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let audio = match decoder.decode(&packet) {
            Ok(audio) => audio,
            // A damaged packet is skipped, as players do (a damaged AAC
            // packet can also read as an unsupported feature); a note where
            // no packet decodes fails with the first error.
            Err(
                e @ (SymphoniaError::DecodeError(_)
                | SymphoniaError::IoError(_)
                | SymphoniaError::Unsupported(_)),
            ) => {
                first_bad_packet.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(error(e)),
        };
        good_packets += 1;
        let spec = *audio.spec();
        let spec_channels = spec.channels.count() as u16;
        let changed = (sample_rate, channels) != (Some(spec.rate), Some(spec_channels));
        if changed && decoded > 0 {
            return Err(MediaError::malformed(
                name,
                "the sample rate or channel count changes mid-stream",
            ));
        }
        sample_rate = Some(spec.rate);
        channels = Some(spec_channels);
        if spec.rate == 0 || spec_channels == 0 {
            return Err(MediaError::malformed(name, "zero sample rate or channels"));
        }
        let frames = audio.frames() as u64;
        if frames == 0 {
            continue;
        }
        let buffer = match &mut samples {
            Some(b) if b.capacity() >= audio.capacity() * usize::from(spec_channels) => b,
            _ => samples.insert(SampleBuffer::new(audio.capacity() as u64, spec)),
        };
        buffer.copy_interleaved_ref(audio);
        let interleaved = buffer.samples();

        // Edit list: drop the encoder's priming, stop at the declared end.
        let mut from = 0u64;
        if skip > 0 {
            from = skip.min(frames);
            skip -= from;
        }
        let cap = max_frames(spec.rate);
        let room = keep.min(cap).saturating_sub(decoded);
        let to = frames.min(from + room);
        let ch = usize::from(spec_channels);
        batch.extend_from_slice(&interleaved[from as usize * ch..to as usize * ch]);
        decoded += to - from;
        if batch.len() >= 8 * 1024 {
            emit(Pcm {
                sample_rate: spec.rate,
                channels: spec_channels,
                samples: std::mem::take(&mut batch),
            });
        }
        if decoded >= cap {
            capped = true;
            break;
        }
        if decoded >= keep {
            break;
        }
    }

    let (Some(sample_rate), Some(channels)) = (sample_rate, channels) else {
        return Err(MediaError::malformed(
            name,
            "no sample rate or channel count",
        ));
    };
    if sample_rate == 0 || channels == 0 {
        return Err(MediaError::malformed(name, "zero sample rate or channels"));
    }
    if let (0, Some(e)) = (good_packets, first_bad_packet) {
        return Err(error(e));
    }
    if !capped && limits.check_length {
        if let Some(declared) = params.n_frames {
            let declared = declared.min(keep);
            // Lossless containers declare exactly what they hold; lossy
            // ones may round to a packet.
            let slack = match format {
                AudioFormat::Wav | AudioFormat::Flac | AudioFormat::OggFlac => 0,
                _ => 4096,
            };
            if decoded + slack < declared {
                return Err(MediaError::Truncated { format: name });
            }
        }
    }
    if !batch.is_empty() || decoded == 0 {
        emit(Pcm {
            sample_rate,
            channels,
            samples: batch,
        });
    }
    Ok(Outcome {
        sample_rate,
        channels,
        capped,
    })
}

fn symphonia_error(format: &'static str, e: SymphoniaError) -> MediaError {
    match e {
        SymphoniaError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            MediaError::Truncated { format }
        }
        SymphoniaError::IoError(e) => MediaError::malformed(format, e.to_string()),
        SymphoniaError::DecodeError(reason) => MediaError::malformed(format, reason),
        SymphoniaError::Unsupported(feature) => MediaError::UnsupportedFeature {
            format,
            feature: feature.to_string(),
        },
        SymphoniaError::LimitError(reason) => MediaError::malformed(format, reason),
        other => MediaError::malformed(format, other.to_string()),
    }
}

/// A symphonia source that reads the chunks pushed into a channel, blocking
/// until the next one arrives; a closed channel is the end of the input.
struct ChannelSource {
    // symphonia wants a `Sync` source; only the worker thread reads it.
    chunks: Mutex<mpsc::Receiver<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChannelSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            let next = self
                .chunks
                .get_mut()
                .map_err(|_| io::Error::other("input channel poisoned"))?
                .recv();
            match next {
                Ok(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Seek for ChannelSource {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a streamed note cannot seek",
        ))
    }
}

impl MediaSource for ChannelSource {
    fn is_seekable(&self) -> bool {
        false
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}
