use nanostream::prelude::*;

// Rejected (not `async`), yet the wiring below type-checks: the only error
// is the one about the function.
#[node]
fn triple(x: u64) -> u64 {
    x * 3
}

#[node]
fn scale(x: u64, factor: &u64, seen: &mut u64) -> u64 {
    *seen += 1;
    x * factor
}

fn main() {
    let mut g = Topology::builder();
    let n = g.source("n", from_iter(0..3u64));
    let t = g.node("t", triple(), n);
    let s = g.node("s", scale(2), t);
    g.sink("print", for_each(|x: u64| async move { println!("{x}") }), s);
    let _ = g.build();
}
