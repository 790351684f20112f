use nanostream::{Emitter, node};

#[node]
async fn split(line: String, out: &mut Emitter<String>) -> usize {
    out.emit(line.clone()).await;
    line.len()
}

fn main() {}
