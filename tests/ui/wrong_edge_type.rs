use nanostream::prelude::*;

#[node]
async fn triple(x: u64) -> u64 {
    x * 3
}

fn main() {
    let mut g = Topology::builder();
    let words = g.source("words", from_iter(["a".to_owned()]));
    let _t = g.node("triple", triple(), words);
}
