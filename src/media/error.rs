//! Why a note could not be turned into speech. Each variant names a cause the
//! caller acts on differently: ask the customer for another format, refetch a
//! cut download, or give up on a broken file.

/// A failure of the media path. Bad input always ends here, never in a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// No bytes at all.
    #[error("the note is empty")]
    Empty,
    /// More bytes than [`MediaConfig::max_input_bytes`](super::MediaConfig).
    #[error("the note is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The bytes are not any audio format we know.
    #[error("the bytes are not a recognised audio format")]
    Unrecognised,
    /// A format we recognise but do not decode, such as AMR.
    #[error("unsupported format: {format}")]
    UnsupportedFormat { format: &'static str },
    /// A supported format using a feature we do not decode, such as an Opus
    /// stream with more than two channels.
    #[error("unsupported {feature} in {format}")]
    UnsupportedFeature {
        format: &'static str,
        feature: String,
    },
    /// The bytes claim to be `format` but break its rules.
    #[error("malformed {format}: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    /// The input ended before the container said it would: most likely the
    /// download was cut, and the note should be fetched again.
    #[error("{format} ends before its declared end: the download was probably cut")]
    Truncated { format: &'static str },
    /// The decoder library failed for a reason other than the input.
    #[error("{format} decoder failed: {reason}")]
    Codec {
        format: &'static str,
        reason: String,
    },
    /// The decoded audio has a sample rate or channel count we cannot resample.
    #[error("cannot resample {sample_rate} Hz, {channels} channels: {reason}")]
    Resample {
        sample_rate: u32,
        channels: u16,
        reason: String,
    },
}

impl MediaError {
    pub(crate) fn malformed(format: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            format,
            reason: reason.into(),
        }
    }
}
