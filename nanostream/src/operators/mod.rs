//! The built-in operators, one per file: nodes made from closures, and the
//! stateful ones (batches, windows, keyed state, rate limits, parallel
//! workers).

mod batch;
pub(crate) mod closures;
mod count;
mod event_window;
mod inspect;
mod join;
mod keyed;
pub(crate) mod parallel;
mod throttle;
mod watermarks;
mod window;

pub use batch::{Batch, batch};
pub use closures::{Filter, FilterMap, FlatMap, Map, Then, filter, filter_map, flat_map, map, then};
pub use count::{Count, Counter, count};
pub use event_window::{
    Emission, EventWindow, Late, LateOutput, LateSender, PerKey, Shape, TimeWindow, WholeWindow, WindowBatch,
    WindowError, WindowResult, Windows,
};
pub use inspect::{Inspect, inspect};
pub use join::{Inner, IntervalJoin, JoinMode, JoinSpec, LeftOuter, LeftSpec, Side};
pub use keyed::{FoldByKey, ScanByKey, fold_by_key, scan_by_key};
pub use throttle::{Throttle, throttle};
pub use watermarks::{Watermarks, watermarks};
pub use window::{Window, Windowed, sliding, tumbling};
