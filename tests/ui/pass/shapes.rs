//! Every shape `#[node]` accepts, wired into one topology.
use nanostream::prelude::*;

#[node]
async fn map_one(x: u64) -> u64 {
    x + 1
}

#[node]
async fn keep_even(x: u64) -> Option<u64> {
    (x % 2 == 0).then_some(x)
}

#[node]
async fn fallible(x: u64) -> Result<u64, std::num::TryFromIntError> {
    u32::try_from(x).map(u64::from)
}

#[node]
async fn split(x: u64, out: &mut Emitter<u64>) {
    out.emit(x).await;
    out.emit(x).await;
}

#[node]
async fn numbers(out: &mut Emitter<u64>) {
    for x in 0..10 {
        out.emit(x).await;
    }
}

#[node]
async fn with_config_and_state(x: u64, label: &str, seen: &mut u64) -> String {
    *seen += 1;
    format!("{label} {x} {seen}")
}

#[node]
async fn print(line: String) {
    println!("{line}");
}

#[node(crate = nanostream)]
async fn renamed_crate(x: u64) -> u64 {
    x
}

fn main() {
    let mut g = Topology::builder();
    let n = g.source("numbers", numbers());
    let a = g.node("map_one", map_one(), n);
    let b = g.node("keep_even", keep_even(), a);
    let c = g.node("fallible", fallible(), b);
    let d = g.node("split", split(), c);
    let e = g.node("renamed_crate", renamed_crate(), d);
    let f = g.node("label", with_config_and_state("item"), e);
    g.sink("print", print(), f);
    assert!(g.build().is_ok());
}
