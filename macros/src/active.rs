//! `#[active]`: from an inherent impl block to a typed proxy, a request enum
//! and the dispatch that serves it.
//!
//! Three stages, one module each: [`parse`] checks the impl block and reads
//! it into the [`ir`] model, [`codegen`] turns the model into items. The
//! impl block itself is always emitted again (without the helper
//! attributes), errors or not: the user's code keeps type-checking, so a
//! mistake in the attribute's use does not bury its message under errors
//! about a type that would otherwise have vanished.

mod codegen;
mod ir;
mod parse;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

/// Expands `#[active(attr)] item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut item_impl = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Impl(item_impl)) => item_impl,
        Ok(other) => {
            let error = syn::Error::new_spanned(&other, parse::TRAIT_IMPL);
            return with_errors(item, error);
        }
        // Not an item at all: rustc will say why when it reads it back.
        Err(error) => return with_errors(item, error),
    };
    match parse::parse(attr, &mut item_impl) {
        Ok(model) => {
            let generated = codegen::expand(&model);
            quote!(#item_impl #generated)
        }
        Err(error) => with_errors(item_impl.into_token_stream(), error),
    }
}

fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    quote!(#item #errors)
}
