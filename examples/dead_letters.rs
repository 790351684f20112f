//! Routing malformed records to a dead-letter sink instead of stopping.
//!
//! A parser turns CSV-like order lines into typed orders. Malformed lines do
//! not stop the pipeline: `node_with_dead_letters` routes each one, with its
//! parse error, to a sink that prints (or would store) them, while the good
//! orders are totalled per customer.
//!
//! `cargo run --example dead_letters`

use std::collections::BTreeMap;
use std::fmt;

use nanostream::policy::DeadLetter;
use nanostream::prelude::*;

/// A parsed order.
#[derive(Debug, Clone)]
struct Order {
    customer: String,
    cents: u64,
}

/// Why a line is not an order.
#[derive(Debug, Clone)]
enum BadOrder {
    MissingField(&'static str),
    BadAmount(String),
}

impl fmt::Display for BadOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadOrder::MissingField(field) => write!(f, "missing field `{field}`"),
            BadOrder::BadAmount(amount) => write!(f, "amount {amount:?} is not a price like 12.50"),
        }
    }
}

impl std::error::Error for BadOrder {}

/// Parses `customer,amount` where amount is like `12.50`.
#[node]
async fn parse_order(line: String) -> Result<Order, BadOrder> {
    let mut fields = line.split(',');
    let customer = fields.next().filter(|c| !c.is_empty()).ok_or(BadOrder::MissingField("customer"))?;
    let amount = fields.next().ok_or(BadOrder::MissingField("amount"))?.trim();
    let (units, hundredths) = amount.split_once('.').unwrap_or((amount, "00"));
    let cents = match (units.parse::<u64>(), hundredths.parse::<u64>()) {
        (Ok(units), Ok(cents)) if hundredths.len() == 2 => units * 100 + cents,
        _ => return Err(BadOrder::BadAmount(amount.to_owned())),
    };
    Ok(Order { customer: customer.to_owned(), cents })
}

#[tokio::main]
async fn main() -> Result<(), nanostream::Error> {
    let lines =
        ["alice,12.50", "bob,3.20", "alice,7", "carol,twelve", ",5.00", "bob,1.05", "erin,1.5", "dave", "carol,9.99"];

    let mut g = Topology::builder();
    let lines = g.source("order_lines", from_iter(lines.map(String::from)));
    let (orders, rejected) = g.node_with_dead_letters("parse_order", parse_order(), lines);

    let (totals, per_customer) = fold(BTreeMap::new(), |mut totals: BTreeMap<String, u64>, o: Order| {
        *totals.entry(o.customer).or_default() += o.cents;
        totals
    });
    g.sink("totals", totals, orders);
    g.sink(
        "rejected_orders",
        for_each(|d: DeadLetter<String, BadOrder>| async move {
            println!("rejected by {}: {:?} ({})", d.node, d.input, d.failure);
        }),
        rejected,
    );
    g.build()?.run().await?;

    println!("totals per customer:");
    for (customer, cents) in per_customer.await.unwrap_or_default() {
        println!("  {customer:<6} {}.{:02}", cents / 100, cents % 100);
    }
    Ok(())
}
