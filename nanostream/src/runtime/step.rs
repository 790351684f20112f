//! The synchronous per-item loops shared by node tasks and fused stages.

use std::any::Any;

use crate::error::BoxError;
use crate::node::{Node, Now};
use crate::runtime::stats::NodeStats;

/// Where a synchronous run over a chunk stopped.
pub(crate) enum Step<In, E> {
    /// Every item was processed.
    Done,
    /// The output buffer is full and must be flushed before going on.
    Full,
    Fail(E),
    /// This item needs the asynchronous path.
    Later(In),
}

/// Where [`process_now`] stopped, with the iterator and buffer it owned.
pub(crate) type Stopped<N, I> = (Step<<N as Node>::In, <N as Node>::Error>, I, Vec<<N as Node>::Out>);

/// Processes items without awaiting for as long as the node allows.
///
/// A plain function that owns the iterator and the output buffer while it
/// runs, so the per-item loop keeps them in registers instead of writing
/// them back to the task's state on every item. A buffer that fills with
/// the chunk's last item is reported as `Done`: the caller flushes it next.
#[inline]
pub(crate) fn process_now<I, N>(node: &mut N, mut items: I, mut buf: Vec<N::Out>, limit: usize) -> Stopped<N, I>
where
    I: ExactSizeIterator<Item = N::In>,
    N: Node,
{
    let room = limit.saturating_sub(buf.len());
    if items.len() <= room {
        // Each item emits at most one output here, so the rest of the chunk
        // fits: no need to watch for a full buffer on every item.
        buf.reserve(items.len());
        while let Some(item) = items.next() {
            match node.process_now(item) {
                Now::Emit(value) => buf.push(value),
                Now::Nothing => {}
                Now::Fail(error) => return (Step::Fail(error), items, buf),
                Now::Later(item) => return (Step::Later(item), items, buf),
            }
        }
        return (Step::Done, items, buf);
    }
    if room == 0 {
        return (Step::Full, items, buf);
    }
    buf.reserve(room);
    while let Some(item) = items.next() {
        match node.process_now(item) {
            Now::Emit(value) => {
                buf.push(value);
                if buf.len() >= limit && items.len() > 0 {
                    return (Step::Full, items, buf);
                }
            }
            Now::Nothing => {}
            Now::Fail(error) => return (Step::Fail(error), items, buf),
            Now::Later(item) => return (Step::Later(item), items, buf),
        }
    }
    (Step::Done, items, buf)
}

/// Counts an error against the node before it is returned.
pub(crate) fn failure<E: Into<BoxError>>(stats: &NodeStats, error: E) -> BoxError {
    stats.add_error();
    error.into()
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
