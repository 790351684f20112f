//! A node's outputs not yet sent, with the acknowledgements they owe.

use crate::edge::acks::Acks;
use crate::edge::channel::{Chunk, ChunkCloner};

/// The outputs not yet sent, and what they owe.
pub(crate) struct Buffer<T> {
    pub(crate) items: Vec<T>,
    /// Acknowledgements owed by `items`, besides `current`.
    pub(crate) acks: Acks,
    /// What everything emitted right now owes.
    pub(crate) current: Owed,
    /// An empty allocation to fill next, so a flush does not allocate.
    pub(crate) spare: Vec<T>,
}

impl<T> Buffer<T> {
    pub(crate) fn new() -> Self {
        Self { items: Vec::new(), acks: Acks::default(), current: Owed::default(), spare: Vec::new() }
    }

    /// What a chunk of the first buffered items owes: everything the buffer
    /// owes (a copy, if items stay behind) and a copy of `current`.
    pub(crate) fn owed_by_front(&mut self, whole: bool) -> Acks {
        let mut owed = if whole { std::mem::take(&mut self.acks) } else { self.acks.clone() };
        self.current.copy_into(&mut owed);
        owed
    }

    /// Moves the first `n` items out as a chunk, leaving a recycled or fresh
    /// allocation for the rest.
    pub(crate) fn take_front(&mut self, n: usize) -> Chunk<T> {
        let whole = n >= self.items.len();
        let acks = self.owed_by_front(whole);
        let mut next = if self.spare.capacity() > 0 { std::mem::take(&mut self.spare) } else { Vec::with_capacity(n) };
        if !whole {
            next.extend(self.items.drain(n..));
        }
        Chunk { items: std::mem::replace(&mut self.items, next), acks }
    }

    /// A copy of the first `n` items as a chunk, for one more reader.
    pub(crate) fn clone_front(&mut self, n: usize, clone: ChunkCloner<T>) -> Chunk<T> {
        Chunk { items: clone(&self.items[..n]), acks: self.owed_by_front(false) }
    }

    /// Nothing buffered can be delivered: drop it, and abandon what it owed.
    pub(crate) fn discard(&mut self) {
        self.items.clear();
        self.acks = Acks::default();
    }
}

/// Acknowledgements of everything emitted right now: those of the input
/// being processed, and those an operator adopted from its state. Kept apart
/// so that holding the input's acknowledgements never copies adopted ones
/// (which would compound copies at every hold).
#[derive(Debug, Default)]
pub(crate) struct Owed {
    pub(crate) input: Acks,
    pub(crate) adopted: Acks,
}

impl Owed {
    pub(crate) fn copy_into(&self, acks: &mut Acks) {
        if !self.input.is_empty() {
            acks.extend_from(&self.input);
        }
        if !self.adopted.is_empty() {
            acks.extend_from(&self.adopted);
        }
    }

    pub(crate) fn move_into(&mut self, acks: &mut Acks) {
        acks.append(&mut self.input);
        acks.append(&mut self.adopted);
    }
}
