//! Explicit rollback: every step that builds part of a pod or container registers how to
//! undo it; if the whole does not complete, the steps are undone newest first.

#[derive(Default)]
pub(crate) struct Rollback(Vec<Box<dyn FnOnce() + Send>>);

impl Rollback {
    pub(crate) fn push(&mut self, f: impl FnOnce() + Send + 'static) {
        self.0.push(Box::new(f));
    }

    /// The work completed: nothing is undone.
    pub(crate) fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}
