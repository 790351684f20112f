use nanostream::node;

#[node]
async fn name(x: u64) -> &'static str {
    if x > 0 { "positive" } else { "zero" }
}

fn main() {}
