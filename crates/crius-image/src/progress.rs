//! What a pull reports while it runs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    Waiting,
    Downloading,
    /// Unpacked by an earlier pull; nothing to fetch.
    Exists,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// Compressed blob digest.
    pub digest: String,
    pub downloaded: u64,
    pub total: u64,
    pub state: LayerState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// The normalised reference.
    pub reference: String,
    /// Empty until the manifest is known.
    pub layers: Vec<LayerProgress>,
}
