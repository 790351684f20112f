use nanostream::node;

#[node]
async fn scale(&self, x: u64) -> u64 {
    x
}

fn main() {}
