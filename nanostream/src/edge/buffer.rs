//! A node's outputs not yet sent, with the acknowledgements they owe.

use crate::edge::acks::Acks;
use crate::edge::channel::{Chunk, ChunkCloner};
use crate::time::Mark;

/// The outputs not yet sent, and what they owe.
pub(crate) struct Buffer<T> {
    pub(crate) items: Vec<T>,
    /// Acknowledgements owed by `items`, besides `current`.
    pub(crate) acks: Acks,
    /// What everything emitted right now owes.
    pub(crate) current: Owed,
    /// An empty allocation to fill next, so a flush does not allocate.
    pub(crate) spare: Vec<T>,
    /// The watermarks set between the items.
    pub(crate) marks: Marks,
}

impl<T> Buffer<T> {
    pub(crate) fn new() -> Self {
        Self {
            items: Vec::new(),
            acks: Acks::default(),
            current: Owed::default(),
            spare: Vec::new(),
            marks: Marks::default(),
        }
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
        let mark = self.marks.take(n);
        let mut next = if self.spare.capacity() > 0 { std::mem::take(&mut self.spare) } else { Vec::with_capacity(n) };
        if !whole {
            next.extend(self.items.drain(n..));
        }
        Chunk { items: std::mem::replace(&mut self.items, next), acks, mark }
    }

    /// A copy of the first `n` items as a chunk, for one more reader.
    pub(crate) fn clone_front(&mut self, n: usize, clone: ChunkCloner<T>) -> Chunk<T> {
        Chunk { items: clone(&self.items[..n]), acks: self.owed_by_front(false), mark: self.marks.peek(n) }
    }

    /// Nothing buffered can be delivered: drop it, and abandon what it owed.
    pub(crate) fn discard(&mut self) {
        self.items.clear();
        self.acks = Acks::default();
        self.marks.take(usize::MAX);
    }

    /// Sets the watermark that holds once every item buffered now is sent.
    pub(crate) fn set_mark(&mut self, mark: Mark) {
        self.marks.set(mark, self.items.len());
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

/// The watermarks of a buffer: a chunk may carry a watermark only if every
/// item emitted before the watermark was set is in the chunk or went before
/// it. A chunk that takes only part of the buffer carries an older one.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// The watermark set last.
    latest: Mark,
    /// How many buffered items were emitted before `latest` was set.
    before: usize,
    /// A watermark set before every buffered item: right for any chunk.
    stable: Mark,
}

impl Marks {
    fn set(&mut self, mark: Mark, buffered: usize) {
        if self.before == 0 {
            self.stable = self.latest;
        }
        self.latest = mark;
        self.before = buffered;
        if buffered == 0 {
            self.stable = mark;
        }
    }

    /// The watermark for a chunk of the first `n` items.
    fn peek(&self, n: usize) -> Mark {
        if n >= self.before { self.latest } else { self.stable }
    }

    /// The same, for a chunk taken out of the buffer.
    fn take(&mut self, n: usize) -> Mark {
        let mark = self.peek(n);
        if n >= self.before {
            self.before = 0;
            self.stable = self.latest;
        } else {
            self.before -= n;
        }
        mark
    }

    /// The watermark set last: right for a chunk once the buffer is empty.
    pub(crate) fn latest(&self) -> Mark {
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn a_chunk_carries_a_watermark_only_once_everything_emitted_before_it_is_in() {
        let at = |ms| Mark::At(Timestamp::from_millis(ms));
        let mut buffer = Buffer::new();
        buffer.items.extend([1, 2]);
        buffer.set_mark(at(10));
        buffer.items.extend([3]);
        // The first item alone must not claim 10: item 2 came before it.
        assert_eq!(buffer.take_front(1).mark, Mark::Untimed);
        assert_eq!(buffer.take_front(1).mark, at(10));
        buffer.set_mark(at(20));
        assert_eq!(buffer.take_front(1).mark, at(20));
        assert_eq!(buffer.marks.latest(), at(20));
    }
}
