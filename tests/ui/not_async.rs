use nanostream::node;

#[node]
fn triple(x: u64) -> u64 {
    x * 3
}

fn main() {}
