use std::rc::Rc;

use nanostream::node;

#[node]
async fn hold_rc(x: u64) -> u64 {
    let shared = Rc::new(x);
    tokio::task::yield_now().await;
    *shared
}

fn main() {}
