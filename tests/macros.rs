//! Every shape `#[node]` supports, used both as a stream adapter and inside
//! a topology.

use std::collections::HashMap;
use std::rc::Rc;

use futures::StreamExt;
use nanostream::prelude::*;

async fn adapt<N: Node>(node: N, input: Vec<N::In>) -> Vec<Result<N::Out, N::Error>> {
    node.apply(futures::stream::iter(input)).collect().await
}

async fn adapt_ok<N: Node>(node: N, input: Vec<N::In>) -> Vec<N::Out>
where
    N::Error: std::fmt::Debug,
{
    adapt(node, input).await.into_iter().map(|r| r.expect("no error")).collect()
}

#[node]
async fn triple(x: u64) -> u64 {
    x * 3 + 1
}

#[node]
async fn keep_even(x: u64) -> Option<u64> {
    x.is_multiple_of(2).then_some(x)
}

#[node]
async fn checked_half(x: u64) -> Result<u64, String> {
    if x.is_multiple_of(2) { Ok(x / 2) } else { Err(format!("{x} is odd")) }
}

#[node]
async fn half_if_small(x: u64) -> Result<Option<u64>, String> {
    match x {
        0..=9 if x.is_multiple_of(2) => Ok(Some(x / 2)),
        0..=9 => Ok(None),
        _ => Err(format!("{x} is too big")),
    }
}

#[node]
async fn words(line: String, out: &mut Emitter<String>) {
    for w in line.split_whitespace() {
        out.emit(w.to_owned()).await;
    }
}

#[node]
async fn words_or_fail(line: String, out: &mut Emitter<String>) -> Result<(), String> {
    if line.is_empty() {
        return Err("empty line".to_owned());
    }
    for w in line.split_whitespace() {
        out.emit(w.to_owned()).await;
    }
    Ok(())
}

/// Multiplies by a configured factor and adds a configured offset.
#[node]
async fn affine(x: i64, factor: &i64, offset: &i64) -> i64 {
    x * factor + offset
}

#[node]
async fn tag(x: u32, prefix: &str) -> String {
    format!("{prefix}{x}")
}

#[node]
async fn running_total(x: u64, total: &mut u64) -> u64 {
    *total += x;
    *total
}

#[node]
async fn count_words(word: String, min_len: &usize, counts: &mut HashMap<String, u32>) -> Option<(String, u32)> {
    if word.len() < *min_len {
        return None;
    }
    let n = counts.entry(word.clone()).or_default();
    *n += 1;
    Some((word, *n))
}

#[node]
async fn numbers(n: &u64, out: &mut Emitter<u64>) {
    for i in 0..*n {
        out.emit(i).await;
    }
}

#[node]
async fn failing_numbers(out: &mut Emitter<u64>) -> Result<(), std::io::Error> {
    out.emit(1).await;
    Err(std::io::Error::other("source broke"))
}

#[node]
async fn store(x: u64, seen: &tokio::sync::mpsc::Sender<u64>) {
    seen.send(x).await.expect("receiver alive");
}

#[node]
async fn store_checked(x: u64) -> Result<(), String> {
    if x > 2 { Err(format!("cannot store {x}")) } else { Ok(()) }
}

#[node]
async fn waits_then_doubles(x: u64) -> u64 {
    tokio::task::yield_now().await;
    // A non-Send value that is dropped before the next `.await` is fine.
    let scratch = Rc::new(x);
    *scratch * 2
}

#[node]
async fn destructure((a, b): (u32, u32)) -> u32 {
    a + b
}

mod nested {
    use nanostream::prelude::*;

    /// Visibility is kept: this constructor is public outside the module.
    #[node]
    pub async fn negate(x: i32) -> i32 {
        -x
    }
}

#[tokio::test]
async fn map_node_emits_one_output_per_input() {
    assert_eq!(adapt_ok(triple(), vec![0, 1, 2]).await, [1, 4, 7]);
}

#[tokio::test]
async fn option_node_filters() {
    assert_eq!(adapt_ok(keep_even(), vec![1, 2, 3, 4]).await, [2, 4]);
}

#[tokio::test]
async fn result_node_reports_errors_in_place() {
    assert_eq!(adapt(checked_half(), vec![4, 3, 2]).await, [Ok(2), Err("3 is odd".to_owned()), Ok(1)]);
}

#[tokio::test]
async fn result_option_node_filters_and_fails() {
    assert_eq!(adapt(half_if_small(), vec![4, 3, 12]).await, [Ok(2), Err("12 is too big".to_owned())]);
}

#[tokio::test]
async fn emitter_node_emits_zero_or_more_outputs_per_input() {
    let lines = vec!["a b c".to_owned(), String::new(), "d".to_owned()];
    assert_eq!(adapt_ok(words(), lines).await, ["a", "b", "c", "d"]);
    let lines = vec!["a".to_owned(), String::new()];
    assert_eq!(adapt(words_or_fail(), lines).await, [Ok("a".to_owned()), Err("empty line".to_owned())]);
}

#[tokio::test]
async fn configuration_parameters_become_constructor_arguments() {
    assert_eq!(adapt_ok(affine(10, -1), vec![1, 2]).await, [9, 19]);
    assert_eq!(adapt_ok(tag("id-"), vec![7]).await, ["id-7"]);
    assert_eq!(adapt_ok(tag(String::from("n")), vec![1]).await, ["n1"]);
}

#[tokio::test]
async fn state_is_kept_across_items_and_starts_from_default() {
    assert_eq!(adapt_ok(running_total(), vec![1, 2, 3]).await, [1, 3, 6]);
    let words = ["to", "stream", "or", "stream"].map(String::from).to_vec();
    assert_eq!(adapt_ok(count_words(3), words).await, [("stream".to_owned(), 1), ("stream".to_owned(), 2)]);
}

#[tokio::test]
async fn each_constructed_node_has_its_own_state() {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter([1u64, 2, 3]));
    let a = g.node("total_a", running_total(), &nums);
    let b = g.node("total_b", running_total(), &nums);
    let (sa, ra) = into_stream(8);
    let (sb, rb) = into_stream(8);
    g.sink("a", sa, a);
    g.sink("b", sb, b);
    g.build().expect("valid").run().await.expect("runs");
    assert_eq!(ra.collect::<Vec<_>>().await, [1, 3, 6]);
    assert_eq!(rb.collect::<Vec<_>>().await, [1, 3, 6]);
}

#[tokio::test]
async fn sources_and_sinks_from_functions_run_in_a_topology() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut g = Topology::builder();
    let nums = g.source("numbers", numbers(5));
    let tripled = g.node("triple", triple(), nums);
    let even = g.node("keep_even", keep_even(), tripled);
    g.sink("store", store(tx), even);
    g.build().expect("valid").run().await.expect("runs");
    let mut got = Vec::new();
    while let Some(x) = rx.recv().await {
        got.push(x);
    }
    assert_eq!(got, [4, 10]);
}

#[tokio::test]
async fn a_failing_function_source_names_itself() {
    let mut g = Topology::builder();
    let nums = g.source("flaky", failing_numbers());
    g.sink("sink", for_each(|_: u64| async {}), nums);
    let error = g.build().expect("valid").run().await.expect_err("fails");
    assert!(matches!(&error, nanostream::Error::NodeFailed { node, .. } if node == "flaky"), "{error:?}");
}

#[tokio::test]
async fn a_fallible_function_sink_fails_the_pipeline() {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0..10u64));
    g.sink("store", store_checked(), nums);
    let error = g.build().expect("valid").run().await.expect_err("fails");
    let nanostream::Error::NodeFailed { node, source } = error else {
        panic!("expected NodeFailed");
    };
    assert_eq!((node.as_str(), source.to_string().as_str()), ("store", "cannot store 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_await_run_on_a_multi_thread_runtime() {
    let mut g = Topology::builder();
    let nums = g.source("numbers", from_iter(0..1000u64));
    let doubled = g.node("double", waits_then_doubles(), nums);
    let (sum, total) = fold(0u64, |a, x: u64| a + x);
    g.sink("sum", sum, doubled);
    g.build().expect("valid").run().await.expect("runs");
    assert_eq!(total.await, Some(999 * 1000));
}

#[tokio::test]
async fn patterns_and_visibility_are_kept() {
    assert_eq!(adapt_ok(destructure(), vec![(1, 2)]).await, [3]);
    assert_eq!(adapt_ok(nested::negate(), vec![5]).await, [-5]);
}

#[test]
fn sinks_can_be_fed_from_plain_streams() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let error = store_checked().consume_all(futures::stream::iter([1, 2, 3, 4])).await.expect_err("3 fails");
        assert_eq!(error, "cannot store 3");
    });
}

/// A one-parameter alias of `Result`, as `anyhow::Result<T>` is.
mod checks {
    pub type Result<T> = std::result::Result<T, String>;
}

#[node]
async fn parse_io(line: String) -> std::io::Result<u64> {
    line.trim().parse().map_err(std::io::Error::other)
}

#[node]
async fn checked(x: u64) -> checks::Result<Option<u64>> {
    if x == 0 { Err("zero".to_owned()) } else { Ok(x.is_multiple_of(2).then_some(x)) }
}

#[tokio::test]
async fn a_result_alias_with_one_parameter_names_its_error_through_the_alias() {
    let out = adapt(parse_io(), vec!["7".to_owned(), "x".to_owned()]).await;
    assert_eq!(out[0].as_ref().ok(), Some(&7));
    let error: &std::io::Error = out[1].as_ref().expect_err("not a number");
    assert_eq!(error.kind(), std::io::ErrorKind::Other);
    let out = adapt(checked(), vec![1, 2, 0]).await;
    assert_eq!(out, [Ok(2), Err("zero".to_owned())]);
}

#[test]
fn an_emit_that_is_not_awaited_emits_nothing() {
    #[node]
    async fn forgetful(x: u64, out: &mut Emitter<u64>) {
        drop(out.emit(x));
        out.emit(x + 100).await;
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    assert_eq!(rt.block_on(adapt_ok(forgetful(), vec![1, 2])), [101, 102]);
}
