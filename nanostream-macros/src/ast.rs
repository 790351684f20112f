//! A typed view of a `#[node]` function, with every check that can reject it.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::visit::Visit;
use syn::{Error, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type, TypePath};

/// Arguments of the attribute itself.
pub(crate) struct Args {
    pub(crate) krate: Option<syn::Path>,
}

impl Args {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut krate: Option<syn::Path> = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                if krate.is_some() {
                    return Err(meta.error("the `crate` argument is given twice"));
                }
                krate = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                let name = meta.path.get_ident().map_or_else(|| "this path".to_owned(), |i| format!("`{i}`"));
                Err(meta.error(format!("unknown `#[node]` argument {name}; the only argument is `crate = path`")))
            }
        });
        syn::parse::Parser::parse2(parser, tokens)?;
        Ok(Self { krate })
    }
}

/// How a parameter is used.
pub(crate) enum Param {
    /// The input item, passed by value.
    Input { ty: Type },
    /// `&T`: stored in the node, lent to every call.
    Config { name: Ident, ty: Type, is_str: bool },
    /// `&mut T`: state kept across items, starting from `Default`.
    State { name: Ident, ty: Type },
    /// `&mut Emitter<T>`.
    Emitter { item: Type },
}

/// What the function returns.
pub(crate) enum Output {
    /// `()` or nothing.
    Unit,
    /// A plain value: one output per input.
    Value(Type),
    /// `Option<T>`: zero or one output.
    Maybe(Type),
}

pub(crate) struct Returns {
    pub(crate) output: Output,
    /// The error type of a fallible function.
    pub(crate) error: Option<ErrorType>,
}

/// How a fallible function names its error type.
pub(crate) enum ErrorType {
    /// `Result<_, E>`: `E`.
    Written(Type),
    /// A one-parameter alias of `Result` (`anyhow::Result<T>`,
    /// `io::Result<T>`): the whole return type, whose error type the
    /// compiler finds through the alias.
    OfAlias(Type),
}

pub(crate) enum Kind {
    Node,
    Source,
    Sink,
}

pub(crate) struct NodeFn {
    pub(crate) params: Vec<Param>,
    pub(crate) returns: Returns,
    pub(crate) kind: Kind,
}

/// Every error found in a function, and what could be understood of it.
pub(crate) struct Rejected {
    pub(crate) error: Error,
    /// The parameters understood.
    pub(crate) params: Vec<Param>,
    pub(crate) returns: Option<Returns>,
    pub(crate) kind: Option<Kind>,
}

/// Errors collected rather than returned at the first.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
}

/// The generic argument of the last segment of `ty` if it is `Name<T>`.
fn single_generic<'a>(ty: &'a TypePath, name: &str) -> Option<Option<&'a Type>> {
    let last = ty.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    Some(match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first() {
            Some(GenericArgument::Type(t)) => Some(t),
            _ => None,
        },
        _ => None,
    })
}

fn path_of(ty: &Type) -> Option<&TypePath> {
    match ty {
        Type::Path(p) if p.qself.is_none() => Some(p),
        Type::Paren(p) => path_of(&p.elem),
        Type::Group(g) => path_of(&g.elem),
        _ => None,
    }
}

fn is_emitter(ty: &Type) -> bool {
    path_of(ty).is_some_and(|p| p.path.segments.last().is_some_and(|s| s.ident == "Emitter"))
}

/// Finds the first `impl Trait`, reference or lifetime inside a type.
/// Tokens of the first offending part, so errors underline all of it.
#[derive(Default)]
struct Finder {
    impl_trait: Option<TokenStream>,
    borrow: Option<TokenStream>,
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
        self.impl_trait.get_or_insert_with(|| t.to_token_stream());
    }
    fn visit_type_reference(&mut self, t: &'ast syn::TypeReference) {
        self.borrow.get_or_insert_with(|| t.to_token_stream());
        syn::visit::visit_type_reference(self, t);
    }
    fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
        if l.ident != "static" {
            self.borrow.get_or_insert_with(|| l.to_token_stream());
        }
    }
}

fn find(ty: &Type) -> Finder {
    let mut finder = Finder::default();
    finder.visit_type(ty);
    finder
}

const GENERIC_HINT: &str = "a node's item types must be concrete; implement the `Node` trait for a generic node";

fn reject_impl_trait(ty: &Type) -> syn::Result<()> {
    match find(ty).impl_trait {
        Some(tokens) => Err(Error::new_spanned(
            tokens,
            format!(
                "`#[node]` functions cannot be generic, and `impl Trait` makes a parameter generic; {GENERIC_HINT}"
            ),
        )),
        None => Ok(()),
    }
}

fn param_name(pat: &Pat, what: &str) -> syn::Result<Ident> {
    match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Ok(p.ident.clone()),
        _ => Err(Error::new_spanned(
            pat,
            format!("{what} parameters must be plain names, because they become fields of the node"),
        )),
    }
}

fn classify_param(arg: &FnArg) -> syn::Result<Param> {
    let typed = match arg {
        FnArg::Receiver(receiver) => {
            return Err(Error::new_spanned(
                receiver,
                "`#[node]` functions cannot take `self`; for a node with methods, implement the `Node` trait on your type",
            ));
        }
        FnArg::Typed(typed) => typed,
    };
    let ty = &*typed.ty;
    reject_impl_trait(ty)?;
    match ty {
        Type::Reference(r) => {
            if let Some(lifetime) = &r.lifetime {
                return Err(Error::new_spanned(
                    lifetime,
                    "`#[node]` parameters cannot name lifetimes; write `&T` or `&mut T`",
                ));
            }
            let inner = &*r.elem;
            if is_emitter(inner) {
                if r.mutability.is_none() {
                    return Err(Error::new_spanned(
                        ty,
                        "the emitter must be borrowed mutably: expected `&mut Emitter<Out>`",
                    ));
                }
                return emitter_item(inner).map(|item| Param::Emitter { item });
            }
            if let Some(tokens) = find(inner).borrow {
                return Err(Error::new_spanned(
                    tokens,
                    "configuration and state are stored in the node, so they cannot borrow; use an owned type",
                ));
            }
            if r.mutability.is_some() {
                let name = param_name(&typed.pat, "state")?;
                Ok(Param::State { name, ty: inner.clone() })
            } else {
                let name = param_name(&typed.pat, "configuration")?;
                let is_str = path_of(inner).is_some_and(|p| p.path.is_ident("str"));
                if let Type::Slice(_) | Type::TraitObject(_) = inner {
                    return Err(Error::new_spanned(
                        inner,
                        "configuration is stored in the node and must be `Sized`; take `&Vec<T>` or `&Box<dyn Trait>` instead",
                    ));
                }
                Ok(Param::Config { name, ty: inner.clone(), is_str })
            }
        }
        _ if is_emitter(ty) => {
            Err(Error::new_spanned(ty, "the emitter must be borrowed mutably: expected `&mut Emitter<Out>`"))
        }
        _ => {
            if let Some(tokens) = find(ty).borrow {
                return Err(Error::new_spanned(
                    tokens,
                    "a node's input item must be an owned (`'static`) value, because it crosses a channel",
                ));
            }
            Ok(Param::Input { ty: ty.clone() })
        }
    }
}

fn emitter_item(ty: &Type) -> syn::Result<Type> {
    path_of(ty)
        .and_then(|p| single_generic(p, "Emitter"))
        .flatten()
        .cloned()
        .ok_or_else(|| Error::new_spanned(ty, "expected `Emitter<Out>` with the output item type"))
}

fn owned_output(ty: &Type) -> syn::Result<()> {
    let finder = find(ty);
    if let Some(tokens) = finder.impl_trait.or(finder.borrow) {
        return Err(Error::new_spanned(
            tokens,
            "node outputs must be owned (`'static`) values that can cross a channel; expected `T`, `Option<T>`, `Result<T, E>` or `()` with an owned `T`",
        ));
    }
    if let Type::Never(_) = ty {
        return Err(Error::new_spanned(ty, "a node must return; expected `T`, `Option<T>`, `Result<T, E>` or `()`"));
    }
    Ok(())
}

fn classify_output(ty: &Type) -> syn::Result<Output> {
    owned_output(ty)?;
    if let Type::Tuple(t) = ty
        && t.elems.is_empty()
    {
        return Ok(Output::Unit);
    }
    if let Some(p) = path_of(ty)
        && let Some(inner) = single_generic(p, "Option")
    {
        return match inner {
            Some(inner) => Ok(Output::Maybe(inner.clone())),
            None => Err(Error::new_spanned(ty, "expected `Option<T>`")),
        };
    }
    Ok(Output::Value(ty.clone()))
}

fn classify_return(ret: &ReturnType) -> syn::Result<Returns> {
    let ty = match ret {
        ReturnType::Default => {
            return Ok(Returns { output: Output::Unit, error: None });
        }
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Some(p) = path_of(ty)
        && let Some(last) = p.path.segments.last()
        && last.ident == "Result"
    {
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return Err(Error::new_spanned(
                ty,
                "expected `Result<T, E>`, or an alias of `Result` with one parameter such as `anyhow::Result<T>`",
            ));
        };
        let types: Vec<&Type> = args
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect();
        return match types[..] {
            [ok, err] => {
                owned_output(err)?;
                Ok(Returns { output: classify_output(ok)?, error: Some(ErrorType::Written(err.clone())) })
            }
            [ok] => Ok(Returns { output: classify_output(ok)?, error: Some(ErrorType::OfAlias(ty.clone())) }),
            _ => Err(Error::new_spanned(
                ty,
                "expected `Result<T, E>`, or an alias of `Result` with one parameter such as `anyhow::Result<T>`",
            )),
        };
    }
    Ok(Returns { output: classify_output(ty)?, error: None })
}

impl NodeFn {
    /// Checks the whole signature and reports every problem found, not only
    /// the first; on failure, also returns what could be understood, from
    /// which the caller builds a stub constructor.
    pub(crate) fn analyze(func: &ItemFn) -> Result<Self, Box<Rejected>> {
        let sig = &func.sig;
        let mut errors = Errors::default();
        if let Some(constness) = &sig.constness {
            errors.push(Error::new_spanned(constness, "`#[node]` functions cannot be `const`"));
        }
        if let Some(unsafety) = &sig.unsafety {
            errors.push(Error::new_spanned(unsafety, "`#[node]` functions cannot be `unsafe`"));
        }
        if let Some(abi) = &sig.abi {
            errors.push(Error::new_spanned(abi, "`#[node]` functions cannot be `extern`"));
        }
        if sig.asyncness.is_none() {
            errors.push(Error::new_spanned(
                sig.fn_token,
                "the `async` keyword is missing: `#[node]` turns an `async fn` into a node",
            ));
        }
        if !sig.generics.params.is_empty() {
            errors.push(Error::new_spanned(
                &sig.generics,
                format!("`#[node]` functions cannot be generic; {GENERIC_HINT}"),
            ));
        }
        if let Some(clause) = &sig.generics.where_clause {
            errors.push(Error::new_spanned(
                clause,
                format!("`#[node]` functions cannot have a `where` clause; {GENERIC_HINT}"),
            ));
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(Error::new_spanned(variadic, "`#[node]` functions cannot be variadic"));
        }

        let mut params = Vec::with_capacity(sig.inputs.len());
        let mut input_seen = false;
        let mut emitter_seen = false;
        // Whether every parameter was understood: the kind of node is only
        // known then.
        let mut params_known = true;
        for arg in &sig.inputs {
            let param = match classify_param(arg) {
                Ok(param) => param,
                Err(error) => {
                    errors.push(error);
                    params_known = false;
                    continue;
                }
            };
            match &param {
                Param::Input { .. } if input_seen => {
                    errors.push(Error::new_spanned(
                        arg,
                        "a node takes one input item, and an earlier parameter already is it; configuration is taken by reference (`&T`) and state by `&mut T`",
                    ));
                    continue;
                }
                Param::Input { .. } => input_seen = true,
                Param::Emitter { .. } if emitter_seen => {
                    errors.push(Error::new_spanned(arg, "a node has one emitter; this is a second `&mut Emitter<_>`"));
                    continue;
                }
                Param::Emitter { .. } => emitter_seen = true,
                _ => {}
            }
            params.push(param);
        }

        let returns = match classify_return(&sig.output) {
            Ok(returns) => Some(returns),
            Err(error) => {
                errors.push(error);
                None
            }
        };
        let kind = match (input_seen, emitter_seen) {
            (_, true) => {
                if returns.as_ref().is_some_and(|r| !matches!(r.output, Output::Unit)) {
                    errors.push(Error::new_spanned(
                        &sig.output,
                        "a node with an `&mut Emitter<_>` parameter emits through it; expected the return type `()` or `Result<(), E>`",
                    ));
                }
                Some(if input_seen { Kind::Node } else { Kind::Source })
            }
            (true, false) => returns.as_ref().map(|r| match r.output {
                Output::Unit => Kind::Sink,
                _ => Kind::Node,
            }),
            (false, false) if params_known => {
                errors.push(Error::new_spanned(
                    &sig.ident,
                    "a `#[node]` function needs an input parameter (the item, by value), an `&mut Emitter<Out>` parameter, or both",
                ));
                None
            }
            (false, false) => None,
        };
        match (errors.0, returns, kind) {
            (None, Some(returns), Some(kind)) => Ok(Self { params, returns, kind }),
            (error, returns, kind) => Err(Box::new(Rejected {
                error: error
                    .unwrap_or_else(|| Error::new_spanned(&sig.ident, "this `#[node]` function is not understood")),
                params,
                returns,
                kind,
            })),
        }
    }

    pub(crate) fn input_type(&self) -> Option<&Type> {
        self.params.iter().find_map(|p| match p {
            Param::Input { ty } => Some(ty),
            _ => None,
        })
    }

    /// The type of the items this node emits.
    pub(crate) fn output_type(&self) -> Option<&Type> {
        self.params
            .iter()
            .find_map(|p| match p {
                Param::Emitter { item } => Some(item),
                _ => None,
            })
            .or(match &self.returns.output {
                Output::Value(t) | Output::Maybe(t) => Some(t),
                Output::Unit => None,
            })
    }
}

/// Whether a function body awaits anything itself (nested closures, async
/// blocks and items are other functions and do not count). Macro calls are
/// opaque, so an `await` token inside one counts.
pub(crate) fn body_awaits(block: &syn::Block) -> bool {
    struct Awaits(bool);
    fn tokens_await(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) => i == "await",
            proc_macro2::TokenTree::Group(g) => tokens_await(g.stream()),
            _ => false,
        })
    }
    impl<'ast> Visit<'ast> for Awaits {
        fn visit_expr_await(&mut self, _: &'ast syn::ExprAwait) {
            self.0 = true;
        }
        fn visit_expr_async(&mut self, _: &'ast syn::ExprAsync) {}
        fn visit_expr_closure(&mut self, _: &'ast syn::ExprClosure) {}
        fn visit_item(&mut self, _: &'ast syn::Item) {}
        fn visit_macro(&mut self, mac: &'ast syn::Macro) {
            self.0 |= tokens_await(mac.tokens.clone());
        }
    }
    let mut awaits = Awaits(false);
    awaits.visit_block(block);
    awaits.0
}
