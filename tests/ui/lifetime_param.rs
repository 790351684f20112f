use nanostream::node;

#[node]
async fn prefix(x: u64, p: &'static str) -> String {
    format!("{p}{x}")
}

fn main() {}
