//! The media path fed as a download: the note arrives in chunks.
//!
//! Input: two bytes choosing the chunk sizes (see `voxline_fuzz::chunks`),
//! then the note. The target
//! - drives `decode::StreamDecoder` chunk by chunk, draining PCM with
//!   `take_pcm` after every chunk as the TTS client does, and checks that
//!   the result is the one the same decoder gives for the whole note in one
//!   push: the decoder's documentation promises "chunks of any size";
//! - drives `NoteBuilder` chunk by chunk, as the pipeline's fetch does, and
//!   checks the `PreparedNote` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxline::media::decode::StreamDecoder;
use voxline::media::{MediaConfig, MediaError, NoteBuilder, Pcm};

/// The PCM a decoder produced: rate and channels of the first samples, and
/// all samples.
#[derive(Debug, PartialEq)]
struct Output {
    sample_rate: u32,
    channels: u16,
    /// Compared bit for bit: the same decoder on the same bytes.
    samples: Vec<u32>,
}

impl Output {
    fn empty() -> Self {
        Self {
            sample_rate: 0,
            channels: 0,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, pcm: Pcm) {
        if pcm.samples.is_empty() {
            return;
        }
        if self.samples.is_empty() {
            self.sample_rate = pcm.sample_rate;
            self.channels = pcm.channels;
        }
        self.samples.extend(pcm.samples.iter().map(|s| s.to_bits()));
    }
}

fn decode(config: &MediaConfig, chunks: &[&[u8]]) -> Result<Output, MediaError> {
    let mut decoder = StreamDecoder::new(config);
    let mut out = Output::empty();
    for chunk in chunks {
        decoder.push(chunk)?;
        if let Some(pcm) = decoder.take_pcm() {
            out.add(pcm);
        }
    }
    out.add(decoder.finish()?);
    Ok(out)
}

fn describe(result: &Result<Output, MediaError>) -> String {
    match result {
        Ok(out) => format!(
            "Ok({} samples at {} Hz, {} channels)",
            out.samples.len(),
            out.sample_rate,
            out.channels
        ),
        Err(e) => format!("Err({e})"),
    }
}

fuzz_target!(init: voxline_fuzz::init(), |data: &[u8]| {
    let [small, large, note @ ..] = data else {
        return;
    };
    let config = voxline_fuzz::media_config();
    let chunks = voxline_fuzz::chunks(*small, *large, note);

    let chunked = decode(&config, &chunks);
    let whole = decode(&config, &[note]);
    match (&chunked, &whole) {
        (Ok(a), Ok(b)) => assert!(
            a == b,
            "chunked and whole decodes differ: {} vs {}",
            describe(&chunked),
            describe(&whole)
        ),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "chunked decode gives {} but the whole note gives {} ({} chunks)",
            describe(&chunked),
            describe(&whole),
            chunks.len()
        ),
    }

    let mut builder = NoteBuilder::new(&config);
    let built = chunks
        .iter()
        .try_for_each(|chunk| builder.push(chunk))
        .and_then(|()| builder.finish());
    if let Ok(note) = built {
        voxline_fuzz::check_note(&note, &config);
    }
});
