//! The prelude glob-imports beside `futures::prelude::*` with no clash:
//! every name below resolves to one item.

use futures::prelude::*;
use nanostream::prelude::*;

#[node]
async fn double(x: u32) -> u32 {
    x * 2
}

/// `Sink` and `Stream` are futures' traits here; nanostream's `Sink` is
/// named by path.
fn feed<S: Sink<u32> + Unpin>(sink: S) -> S {
    sink
}

struct Count(u32);

impl nanostream::Sink for Count {
    type In = u32;
    type Error = std::convert::Infallible;

    async fn consume(&mut self, _: u32) -> Result<(), Self::Error> {
        self.0 += 1;
        Ok(())
    }
}

fn main() {
    let mut g = Topology::builder();
    let xs = g.source("xs", from_iter(0..3u32));
    let ys = g.node("double", double(), xs);
    let zs = g.node("plus_one", map(|x: u32| x + 1), ys);
    let odd = g.node("odd", filter(|x: &u32| x % 2 == 1), zs);
    let (store, results) = into_stream(4);
    g.sink("store", store, &odd);
    g.sink("count", Count(0), &odd);
    let (sum, _total) = fold(0, |a, x: u32| a + x);
    g.sink("sum", sum, odd);
    let more = g_output(&mut g);
    g.sink("print", for_each(|x: u32| async move { println!("{x}") }), more);
    let _ = results.map(|x| x + 1).boxed();
    let _ = feed(futures::sink::drain());
    let _ = g.build();
}

fn g_output(g: &mut nanostream::TopologyBuilder) -> Output<u32> {
    g.source("more", from_iter(0..1u32))
}

#[allow(dead_code)]
fn uses_node<N: Node<In = u32>>(node: N, out: &Emitter<u32>) -> N {
    let _ = out;
    let _ = node.skip_errors().apply(stream::iter([1u32])).boxed();
    unreachable!()
}

#[allow(dead_code)]
fn uses<S: Source>(s: S) -> impl Stream<Item = u8> {
    let _ = s;
    stream::iter([1u8])
}
