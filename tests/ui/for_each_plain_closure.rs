use nanostream::prelude::*;

fn main() {
    let mut g = Topology::builder();
    let n = g.source("numbers", from_iter(0..3u32));
    g.sink("print", for_each(|x: u32| println!("{x}")), n);
}
