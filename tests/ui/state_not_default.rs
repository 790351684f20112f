use nanostream::node;

struct Counter(u64);

#[node]
async fn count(x: u64, counter: &mut Counter) -> u64 {
    counter.0 += x;
    counter.0
}

fn main() {}
