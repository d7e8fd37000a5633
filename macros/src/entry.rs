//! `#[actogrid::main]`: wraps `async fn main` so the same binary serves as
//! a node runtime when it is launched as one.

use proc_macro2::TokenStream;
use quote::quote;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !args.is_empty() {
        return Err(syn::Error::new_spanned(
            args,
            "#[actogrid::main] takes no arguments",
        ));
    }
    let function: syn::ItemFn = syn::parse2(item)?;
    if function.sig.ident != "main" {
        return Err(syn::Error::new_spanned(
            &function.sig.ident,
            "#[actogrid::main] goes on `async fn main`",
        ));
    }
    if function.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            function.sig.fn_token,
            "#[actogrid::main] needs `async fn main`: the application runs on the runtime's executor",
        ));
    }
    if !function.sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &function.sig.inputs,
            "`main` takes no arguments",
        ));
    }
    let attrs = &function.attrs;
    let vis = &function.vis;
    let output = &function.sig.output;
    let body = &function.block;
    Ok(quote! {
        #(#attrs)*
        #vis fn main() #output {
            ::actogrid::__run_main(|| async move #body)
        }
    })
}
