//! The container sniffer on arbitrary bytes: a verdict or a typed error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxline::media::{detect, MediaError};

fuzz_target!(init: voxline_fuzz::init(), |data: &[u8]| {
    match detect(data) {
        Ok(format) => {
            assert!(!format.name().is_empty() && format.mime().starts_with("audio/"));
        }
        Err(MediaError::Empty) => assert!(data.is_empty()),
        Err(_) => assert!(!data.is_empty()),
    }
});
