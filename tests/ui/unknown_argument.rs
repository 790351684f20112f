use nanostream::node;

#[node(workers = 4)]
async fn triple(x: u64) -> u64 {
    x * 3
}

fn main() {}
