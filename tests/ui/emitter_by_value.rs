use nanostream::{Emitter, node};

#[node]
async fn split(line: String, out: Emitter<String>) {
    drop((line, out));
}

fn main() {}
