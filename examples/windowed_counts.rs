//! Counting events per key in tumbling windows.
//!
//! A source generates page-view events for six seconds (about 2,000 per
//! second, with one page trending halfway through); a keyed tumbling window
//! counts views per page every two seconds. Windows close on a timer, and
//! the window still open when the source stops is flushed at the end.
//!
//! `cargo run --release --example windowed_counts`

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use nanostream::operators::{Windowed, tumbling};
use nanostream::prelude::*;

/// A page view.
struct View {
    page: &'static str,
}

/// Emits page views for `seconds`: a steady mix, plus a burst on `/sale`
/// in the middle of the run.
#[node]
async fn page_views(seconds: &u64, out: &mut Emitter<View>) {
    const PAGES: [&str; 4] = ["/", "/search", "/cart", "/checkout"];
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut n: usize = 0;
    while started.elapsed() < Duration::from_secs(*seconds) {
        tick.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        out.emit(View { page: PAGES[n % PAGES.len()] }).await;
        out.emit(View { page: PAGES[(n * 7 + 3) % PAGES.len()] }).await;
        if (2.0..4.0).contains(&elapsed) {
            out.emit(View { page: "/sale" }).await;
        }
        n += 1;
    }
}

fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

#[tokio::main]
async fn main() -> Result<(), nanostream::Error> {
    let mut g = Topology::builder();
    let views = g.source("page_views", page_views(6));
    let per_window = tumbling(Duration::from_secs(2), |v: &View| v.page, || 0u64, |n, _| *n += 1);
    let counts = g.node("views_per_2s", per_window, views);

    // Group each window's per-page results and print the window once it is
    // complete (results of a window arrive together).
    let (sink, done) = fold(
        BTreeMap::new(),
        |mut windows: BTreeMap<SystemTime, Vec<(String, u64)>>, w: Windowed<&'static str, u64>| {
            windows.entry(w.start).or_default().push((w.key.to_owned(), w.value));
            windows
        },
    );
    g.sink("collect", sink, counts);
    g.build()?.run().await?;

    for (start, mut pages) in done.await.unwrap_or_default() {
        pages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let end = start + Duration::from_secs(2);
        let total: u64 = pages.iter().map(|(_, n)| n).sum();
        println!("window {} - {}: {total} views", clock(start), clock(end));
        for (page, n) in pages {
            println!("  {page:<10} {n:>6}");
        }
    }
    Ok(())
}
