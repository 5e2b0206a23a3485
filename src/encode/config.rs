//! Settings of the encode stage, with the defaults a WhatsApp voice note
//! needs.

use serde::Deserialize;

/// How reply speech is packed into Ogg/Opus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncodeConfig {
    /// Opus bitrate in bits per second. Default: 24 000, transparent enough
    /// for synthesised speech and about 3 KB per second of note.
    pub bitrate_bps: u32,
    /// libopus complexity, 0 (fastest) to 10 (best). Default: 5. The encode
    /// bench measured about 210x real time on one core at 5 against 155x at
    /// 10 (24 kHz input, CPU time, 2-core machine shared with builds); for
    /// speech at this bitrate the higher settings change little.
    pub complexity: u8,
    /// Highest audio frequency coded, in Hz: 4000 (narrowband), 6000, 8000
    /// (wideband), 12 000 (super-wideband) or 20 000 (fullband). Default:
    /// 8000. Wideband holds all of speech's intelligibility, is what a phone
    /// call sounds like at its best, and lets libopus use SILK alone, which
    /// the encode bench measured at about 1.1x the speed of the hybrid mode
    /// it picks for 24 and 48 kHz input at this bitrate.
    pub max_bandwidth_hz: u32,
    /// Longest reply kept, in milliseconds; audio beyond it is dropped and
    /// the note is marked truncated. WhatsApp shows a voice note with a play
    /// button only up to 512 KB; at the default bitrate the cap keeps a note
    /// near 280 KB. Default: 90 000.
    pub max_reply_ms: u64,
    /// Audio per Ogg page, in milliseconds: a page is written out each time
    /// this much is encoded. Default: 1000, as opusenc does; a page costs 27
    /// bytes of header, so shorter pages only add overhead to a note that is
    /// uploaded whole.
    pub page_ms: u32,
}

impl Default for EncodeConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: 24_000,
            complexity: 5,
            max_bandwidth_hz: 8_000,
            max_reply_ms: 90_000,
            page_ms: 1000,
        }
    }
}
