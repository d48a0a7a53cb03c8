//! `#[pg_isolate::test]`: a test that receives a private, migrated
//! PostgreSQL database. Use it through the `pg-isolate` crate, which
//! re-exports it and documents it; this crate only rewrites the test
//! function.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{FnArg, ItemFn, LitStr, Token};

/// Marks a test (`fn` or `async fn`) that gets a private database, cloned
/// from a template holding the crate's migrations (and fixtures), as its
/// arguments. See `pg_isolate::test` for the options and argument types.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Options {
    migrations: Option<LitStr>,
    fixtures: Vec<LitStr>,
}

fn parse_options(args: TokenStream2) -> syn::Result<Options> {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("migrations") {
            options.migrations = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("fixtures") {
            let content;
            syn::parenthesized!(content in meta.input);
            let list = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
            options.fixtures.extend(list);
            Ok(())
        } else {
            Err(meta.error("expected `migrations = \"dir\"` or `fixtures(\"file.sql\", ...)`"))
        }
    });
    parser.parse2(args)?;
    Ok(options)
}

fn expand(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let options = parse_options(args)?;
    let function: ItemFn = syn::parse2(item)?;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &function;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a #[pg_isolate::test] function takes no generic parameters",
        ));
    }
    let name = &sig.ident;
    let output = &sig.output;
    let inputs = &sig.inputs;
    let mut types = Vec::new();
    for input in inputs {
        match input {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    "a #[pg_isolate::test] function takes no `self`",
                ));
            }
            FnArg::Typed(typed) => types.push(&typed.ty),
        }
    }
    let (migrations, default_migrations) = match &options.migrations {
        Some(dir) => (dir.clone(), false),
        None => (
            LitStr::new("migrations", proc_macro2::Span::call_site()),
            true,
        ),
    };
    let fixtures = &options.fixtures;
    let setup = quote! {
        let mut __pg_isolate_guard = ::pg_isolate::__macro::Guard::new(
            ::core::env!("CARGO_MANIFEST_DIR"),
            #migrations,
            #default_migrations,
            &[#(#fixtures),*],
        );
    };
    let body = if sig.asyncness.is_some() {
        let args = types.iter().map(|ty| {
            quote! {
                <#ty as ::pg_isolate::__macro::FromTestDatabaseAsync>::from_test_database(
                    &mut __pg_isolate_guard,
                ).await
            }
        });
        quote! {
            async fn __pg_isolate_test(#inputs) #output #block
            #setup
            let __pg_isolate_result = ::pg_isolate::__macro::block_on(async {
                __pg_isolate_test(#(#args),*).await
            });
        }
    } else {
        let args = types.iter().map(|ty| {
            quote! {
                <#ty as ::pg_isolate::__macro::FromTestDatabase>::from_test_database(
                    &mut __pg_isolate_guard,
                )
            }
        });
        quote! {
            fn __pg_isolate_test(#inputs) #output #block
            #setup
            let __pg_isolate_result = __pg_isolate_test(#(#args),*);
        }
    };
    Ok(quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() #output {
            #body
            __pg_isolate_guard.finish(&__pg_isolate_result);
            __pg_isolate_result
        }
    })
}
