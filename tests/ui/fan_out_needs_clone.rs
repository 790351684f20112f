use nanostream::prelude::*;

struct Token(u64);

fn main() {
    let mut g = Topology::builder();
    let tokens = g.source("tokens", from_iter([Token(1)]));
    g.sink("a", for_each(|t: Token| async move { drop(t.0) }), &tokens);
    g.sink("b", for_each(|t: Token| async move { drop(t.0) }), &tokens);
}
