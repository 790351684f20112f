use nanostream::{Emitter, node};

#[node]
async fn split(line: String, left: &mut Emitter<String>, right: &mut Emitter<String>) {
    left.emit(line.clone()).await;
    right.emit(line).await;
}

fn main() {}
