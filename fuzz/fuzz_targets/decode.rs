//! The whole media path on a note already in memory, as the pipeline runs
//! it: `media::load` sniffs the container, hands it to the Ogg/Opus decoder
//! or symphonia (MP3, ADTS AAC, MP4/M4A, WAV, FLAC, Ogg Vorbis, Ogg FLAC),
//! resamples and prepares. Any input gives a note that keeps the
//! `PreparedNote` promises, or a `MediaError`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxline::media;

fuzz_target!(init: voxline_fuzz::init(), |data: &[u8]| {
    let config = voxline_fuzz::media_config();
    if let Ok(note) = media::load(data, &config) {
        voxline_fuzz::check_note(&note, &config);
    }
});
