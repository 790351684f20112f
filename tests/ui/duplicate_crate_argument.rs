use nanostream::node;

#[node(crate = nanostream, crate = nanostream)]
async fn triple(x: u64) -> u64 {
    x * 3
}

fn main() {}
