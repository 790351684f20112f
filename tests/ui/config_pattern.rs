use nanostream::node;

#[node]
async fn scale(x: u64, &factor: &u64) -> u64 {
    x * factor
}

fn main() {}
