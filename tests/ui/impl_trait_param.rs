use nanostream::node;

#[node]
async fn show(x: impl std::fmt::Display + Send + 'static) -> String {
    x.to_string()
}

fn main() {}
