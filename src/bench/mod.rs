//! `voxline bench`: the fixtures through the whole pipeline, and the peers
//! it needs.

pub mod fake_llm;
