//! The `#[node]` attribute of [nanostream](https://docs.rs/nanostream).
//!
//! Use it through `nanostream::node` (or `nanostream::prelude::*`); its
//! documentation lives there.

mod ast;
mod expand;

use proc_macro::TokenStream;

/// Turns an `async fn` into a nanostream node constructor.
///
/// See `nanostream::node` for the supported shapes and examples.
#[proc_macro_attribute]
pub fn node(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::node(args.into(), item.into()).into()
}
