use nanostream::node;

#[node]
async fn tick() -> u64 {
    1
}

fn main() {}
