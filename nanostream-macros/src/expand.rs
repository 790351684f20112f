//! Code generation for `#[node]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, Type};

use crate::ast::{Args, ErrorType, Kind, NodeFn, Output, Param, Rejected, body_awaits};

pub(crate) fn node(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(error) => {
            // Not a function at all: say so, and keep the item for the IDE.
            let error = syn::Error::new(error.span(), "`#[node]` applies to an `async fn`").to_compile_error();
            return quote!(#error #item);
        }
    };
    // Parse, then check everything, then expand from what was understood.
    let args = Args::parse(args);
    let krate = args.as_ref().ok().and_then(|a| a.krate.clone());
    let rejected = match (NodeFn::analyze(&func), args) {
        (Ok(node), Ok(args)) => return generate(&func, &node, &args),
        (Ok(node), Err(error)) => {
            Box::new(Rejected { error, params: node.params, returns: Some(node.returns), kind: Some(node.kind) })
        }
        (Err(mut rejected), Err(error)) => {
            rejected.error.combine(error);
            rejected
        }
        (Err(rejected), Ok(_)) => rejected,
    };
    stub(&func, rejected, krate)
}

/// On error: every error found, and in place of the function a constructor
/// with the signature callers use and a stub body, so that the rest of the
/// crate still type-checks (no follow-on errors at the call sites, IDEs keep
/// working). Types that could not be understood become type parameters,
/// inferred from the call site.
fn stub(func: &ItemFn, rejected: Box<Rejected>, krate: Option<syn::Path>) -> TokenStream {
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::nanostream));
    let p = quote!(#krate::__private);
    let error = rejected.error.to_compile_error();
    let vis = &func.vis;
    let name = &func.sig.ident;
    let mut args = Vec::new();
    let mut input = None;
    let mut emitted = None;
    for param in &rejected.params {
        match param {
            Param::Config { name, is_str: true, .. } => {
                args.push(quote!(#name: impl ::core::convert::Into<#p::String>))
            }
            Param::Config { name, ty, .. } => args.push(quote!(#name: #ty)),
            Param::Input { ty } => input = Some(ty.clone()),
            Param::Emitter { item } => emitted = Some(item.clone()),
            Param::State { .. } => {}
        }
    }
    let returned = rejected.returns.as_ref().and_then(|r| match &r.output {
        Output::Value(ty) | Output::Maybe(ty) => Some(ty.clone()),
        Output::Unit => None,
    });
    let mut generics = Vec::new();
    let in_ty = match (&rejected.kind, input) {
        (Some(Kind::Source), _) => quote!(()),
        (_, Some(ty)) => quote!(#ty),
        (_, None) => {
            generics.push(quote!(__In: #p::Send + 'static));
            quote!(__In)
        }
    };
    let out_ty = match (&rejected.kind, emitted.or(returned)) {
        (Some(Kind::Sink), _) => quote!(#p::Infallible),
        (_, Some(ty)) => quote!(#ty),
        (_, None) => {
            generics.push(quote!(__Out: #p::Send + 'static));
            quote!(__Out)
        }
    };
    // The user's function stays, under another name, so that what it uses
    // (imports, helpers) stays used; a `self` receiver cannot compile outside
    // an `impl` and goes.
    let mut kept = func.clone();
    kept.sig.ident = format_ident!("__nanostream_rejected_{}", name);
    kept.sig.inputs = kept.sig.inputs.into_iter().filter(|arg| !matches!(arg, syn::FnArg::Receiver(_))).collect();
    kept.vis = syn::Visibility::Inherited;
    quote! {
        #error
        #[allow(dead_code, unused_variables, clippy::all)]
        #vis fn #name<#(#generics),*>(#(#args),*) -> #p::Unbuilt<#in_ty, #out_ty> {
            #p::Unbuilt::new()
        }
        #[allow(dead_code, unused_variables, non_snake_case, clippy::all)]
        #kept
    }
}

fn is_outer_attr(attr: &syn::Attribute) -> bool {
    let path = attr.path();
    path.is_ident("doc") || path.is_ident("cfg") || path.is_ident("cfg_attr") || path.is_ident("deprecated")
}

fn generate(func: &ItemFn, node: &NodeFn, args: &Args) -> TokenStream {
    let krate = args.krate.clone().unwrap_or_else(|| syn::parse_quote!(::nanostream));
    let p = quote!(#krate::__private);
    let vis = &func.vis;
    let name = &func.sig.ident;
    let sig_span = func.sig.span();

    let (outer_attrs, inner_attrs): (Vec<_>, Vec<_>) = func.attrs.iter().partition(|a| is_outer_attr(a));
    let mut inner = func.clone();
    inner.attrs = inner_attrs.into_iter().cloned().collect();
    inner.vis = syn::Visibility::Inherited;
    // A body that never awaits runs as a plain function: the runtime then
    // calls it per item without building a future (`process_now`).
    let sync = !matches!(node.kind, Kind::Source)
        && !matches!((&node.kind, &node.returns.output), (Kind::Node, Output::Unit))
        && !body_awaits(&func.block);
    if sync {
        inner.sig.asyncness = None;
    }

    // Constructor arguments, struct fields, their initialisers, and the
    // arguments of each call of the user's function, in parameter order.
    let mut ctor_args = Vec::new();
    let mut fields = Vec::new();
    let mut inits = Vec::new();
    let mut call_args = Vec::new();
    for param in &node.params {
        match param {
            Param::Input { .. } => call_args.push(quote!(__item)),
            Param::Config { name, ty, is_str } => {
                if *is_str {
                    ctor_args.push(quote!(#name: impl ::core::convert::Into<#p::String>));
                    fields.push(quote!(#name: #p::String));
                    inits.push(quote!(#name: ::core::convert::Into::into(#name)));
                } else {
                    ctor_args.push(quote!(#name: #ty));
                    fields.push(quote!(#name: #ty));
                    inits.push(quote!(#name));
                }
                call_args.push(quote!(&self.#name));
            }
            Param::State { name, ty } => {
                fields.push(quote!(#name: #ty));
                let init = quote_spanned!(ty.span()=> <#ty as #p::Default>::default());
                inits.push(quote!(#name: #init));
                call_args.push(quote!(&mut self.#name));
            }
            Param::Emitter { .. } => call_args.push(quote!(__out)),
        }
    }

    let error_ty: Type = match &node.returns.error {
        Some(ErrorType::Written(error)) => error.clone(),
        Some(ErrorType::OfAlias(returned)) => syn::parse_quote!(<#returned as #p::ResultParts>::Err),
        None => syn::parse_quote!(#p::Infallible),
    };
    let fallible = node.returns.error.is_some();
    // The user's future, checked for `Send` with the error pointing at the
    // function's signature rather than at generated code.
    let call = if sync {
        quote!(#name(#(#call_args),*))
    } else {
        // Checked by a function defined here, so that the note "required by
        // a bound" points at the user's signature, not into nanostream.
        quote_spanned!(sig_span=> {
            fn __nanostream_assert_send<F: #p::Future + #p::Send>(future: F) -> F {
                future
            }
            __nanostream_assert_send(#name(#(#call_args),*)).await
        })
    };
    let now_call = quote!(#name(#(#call_args),*));
    let result = if fallible { quote!(#call?) } else { call };
    let unit: Type = syn::parse_quote!(());
    let out_ty = node.output_type().unwrap_or(&unit);
    let in_ty = node.input_type().unwrap_or(&unit);
    let struct_name = format_ident!("__NanostreamNode", span = Span::mixed_site());

    let body = match (&node.kind, &node.returns.output) {
        (Kind::Sink, _) | (Kind::Source, _) | (Kind::Node, Output::Unit) => quote! {
            #result;
            #p::Result::Ok(())
        },
        (Kind::Node, Output::Value(_)) => quote! {
            let __value = #result;
            __out.emit(__value).await;
            #p::Result::Ok(())
        },
        (Kind::Node, Output::Maybe(_)) => quote! {
            if let #p::Option::Some(__value) = #result {
                __out.emit(__value).await;
            }
            #p::Result::Ok(())
        },
    };

    let now_body = match (&node.kind, &node.returns.output, fallible) {
        (Kind::Node, Output::Value(_), false) => quote!(#p::Now::Emit(#now_call)),
        (Kind::Node, Output::Value(_), true) => quote! {
            match #now_call {
                #p::Result::Ok(__value) => #p::Now::Emit(__value),
                #p::Result::Err(__error) => #p::Now::Fail(__error),
            }
        },
        (Kind::Node, Output::Maybe(_), false) => quote! {
            match #now_call {
                #p::Option::Some(__value) => #p::Now::Emit(__value),
                #p::Option::None => #p::Now::Nothing,
            }
        },
        (Kind::Node, Output::Maybe(_), true) => quote! {
            match #now_call {
                #p::Result::Ok(#p::Option::Some(__value)) => #p::Now::Emit(__value),
                #p::Result::Ok(#p::Option::None) => #p::Now::Nothing,
                #p::Result::Err(__error) => #p::Now::Fail(__error),
            }
        },
        (Kind::Sink, _, false) => quote! {
            #now_call;
            #p::Now::Nothing
        },
        (Kind::Sink, _, true) => quote! {
            match #now_call {
                #p::Result::Ok(()) => #p::Now::Nothing,
                #p::Result::Err(__error) => #p::Now::Fail(__error),
            }
        },
        _ => quote!(#p::Now::Later(__item)),
    };
    let process_now = if sync {
        quote! {
            #[inline]
            fn process_now(&mut self, __item: #in_ty) -> #p::Now<#in_ty, #out_ty, #error_ty> {
                #now_body
            }
        }
    } else {
        quote!()
    };
    let consume_now = if sync {
        quote! {
            #[inline]
            fn consume_now(&mut self, __item: #in_ty) -> #p::Now<#in_ty, (), #error_ty> {
                #now_body
            }
        }
    } else {
        quote!()
    };

    let (trait_bound, trait_impl) = match node.kind {
        Kind::Node => (
            quote!(#p::Node<In = #in_ty, Out = #out_ty, Error = #error_ty>),
            quote! {
                impl #p::Node for #struct_name {
                    type In = #in_ty;
                    type Out = #out_ty;
                    type Error = #error_ty;

                    async fn process(
                        &mut self,
                        __item: #in_ty,
                        __out: &mut #p::Emitter<#out_ty>,
                    ) -> #p::Result<(), #error_ty> {
                        #body
                    }

                    #process_now
                }
            },
        ),
        Kind::Source => (
            quote!(#p::Source<Out = #out_ty, Error = #error_ty>),
            quote! {
                impl #p::Source for #struct_name {
                    type Out = #out_ty;
                    type Error = #error_ty;

                    async fn run(
                        &mut self,
                        __out: &mut #p::Emitter<#out_ty>,
                    ) -> #p::Result<(), #error_ty> {
                        #body
                    }
                }
            },
        ),
        Kind::Sink => (
            quote!(#p::Sink<In = #in_ty, Error = #error_ty>),
            quote! {
                impl #p::Sink for #struct_name {
                    type In = #in_ty;
                    type Error = #error_ty;

                    async fn consume(&mut self, __item: #in_ty) -> #p::Result<(), #error_ty> {
                        #body
                    }

                    #consume_now
                }
            },
        ),
    };

    quote! {
        #(#outer_attrs)*
        #vis fn #name(#(#ctor_args),*) -> impl #trait_bound {
            #inner

            #[allow(non_camel_case_types)]
            struct #struct_name {
                #(#fields,)*
            }

            #trait_impl

            #struct_name {
                #(#inits,)*
            }
        }
    }
}
