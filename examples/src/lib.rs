//! Nothing here: see `embed.rs` and the config files beside it.
