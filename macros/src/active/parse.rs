//! Reading `#[active(...)]` and its impl block into the [`ir`](super::ir)
//! model.
//!
//! Every problem becomes a `syn::Error` on the offending tokens, and all of
//! them are reported together so that one compilation shows the whole list.
//! The helper attributes `#[oneway]` and `#[immediate]` are removed from the
//! impl block here whatever the outcome: the block is emitted again either
//! way, and rustc does not know them.

use std::collections::HashMap;
use std::fmt::Display;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::visit::Visit;
use syn::{
    Attribute, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, Pat, Path, ReturnType, Type,
    Visibility,
};

use super::ir::{self, ActiveImpl, Ctor, Failure, Method, Param, Reply};

pub(super) const GENERIC: &str = "active objects are registered by name to be created on remote nodes, so they cannot be generic";
pub(super) const TRAIT_IMPL: &str = "put #[active] on an inherent impl block (`impl Type { ... }`)";
pub(super) const NOT_NAMED: &str = "#[active] needs a named type: `impl Name { ... }`";
pub(super) const ASYNC_CTOR: &str = "constructors of active objects cannot be async: build the state synchronously, then call an async method";
pub(super) const RECEIVER: &str =
    "an active object's method takes `&self` or `&mut self`; the object stays on its node";
pub(super) const ONEWAY_VALUE: &str =
    "`#[oneway]` needs a method returning `()`: a one-way call has no reply to carry a value";
pub(super) const REFERENCE_ARG: &str =
    "arguments of active methods travel over the network: take `T` by value instead of `&T`";
pub(super) const IMPL_TRAIT_ARG: &str = "arguments of active methods travel over the network: name a concrete type instead of `impl Trait`";
pub(super) const REFERENCE_RET: &str =
    "results of active methods travel over the network: return `T` by value instead of `&T`";
pub(super) const IMPL_TRAIT_RET: &str = "results of active methods travel over the network: name a concrete type instead of `impl Trait` (for an asynchronous method, write `async fn`)";
pub(super) const PATTERN_ARG: &str = "name this parameter (`name: Type`): the arguments of an active method become the fields of a request sent over the network";
pub(super) const UNSAFE: &str = "active methods and constructors cannot be `unsafe`: they are called by the runtime, which cannot uphold their safety contract";
pub(super) const NO_CTOR: &str =
    "an active type needs at least one public constructor: an associated function returning `Self`";
pub(super) const UNKNOWN_ARG: &str =
    "unknown argument of #[active]: it takes `crate = path::to::actogrid` and `internal`";

/// Reads the attribute arguments and the impl block, stripping the helper
/// attributes from `item`.
pub(super) fn parse(attr: TokenStream, item: &mut ItemImpl) -> syn::Result<ActiveImpl> {
    let mut errors = Errors::default();
    let (krate, internal) = args(attr).unwrap_or_else(|error| {
        errors.push(error);
        (syn::parse_quote!(::actogrid), false)
    });

    if let Some((_, path, for_token)) = &item.trait_ {
        errors.at(quote::quote!(#path #for_token), TRAIT_IMPL);
        // The items are trait items: classifying them would only add noise.
        for impl_item in &mut item.items {
            take_helpers(impl_item, &mut errors);
        }
        errors.finish()?;
    }
    if !item.generics.params.is_empty() {
        errors.at(&item.generics, GENERIC);
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.at(where_clause, GENERIC);
    }
    let name = type_name(&item.self_ty);
    if let Err(error) = &name {
        errors.push(error.clone());
    }
    // `impl Wrapper<u8>`: generic all the same. After `impl<T>`, the `<T>`
    // of the type would only repeat the error.
    if let (Type::Path(path), true) = (&*item.self_ty, item.generics.params.is_empty()) {
        let arguments = path.path.segments.last().map(|last| &last.arguments);
        if let Some(arguments) = arguments.filter(|a| !a.is_none()) {
            errors.at(arguments, GENERIC);
        }
    }

    let mut reader = Reader {
        errors,
        // Without a name, `Self` still recognises the constructors.
        name: name
            .clone()
            .unwrap_or_else(|_| Ident::new("Self", Span::call_site())),
        self_ty: (*item.self_ty).clone(),
        ctors: Vec::new(),
        methods: Vec::new(),
        variants: HashMap::new(),
        ctor_variants: HashMap::new(),
    };
    for impl_item in &mut item.items {
        match impl_item {
            ImplItem::Fn(function) => reader.function(function),
            other => {
                let helpers = take_helpers(other, &mut reader.errors);
                helpers.misplaced(&mut reader.errors, Misplaced::Other);
            }
        }
    }
    if name.is_ok() && reader.ctors.is_empty() {
        let (impl_token, self_ty) = (&item.impl_token, &item.self_ty);
        reader
            .errors
            .at(quote::quote!(#impl_token #self_ty), NO_CTOR);
    }

    reader.errors.finish()?;
    Ok(ActiveImpl {
        krate,
        internal,
        self_ty: reader.self_ty,
        name: name?,
        ctors: reader.ctors,
        methods: reader.methods,
    })
}

/// Parses `crate = path` (default `::actogrid`) and `internal` (objects of
/// the type are only created by their own runtime, never on request of
/// another).
fn args(attr: TokenStream) -> syn::Result<(Path, bool)> {
    let mut krate: Option<Path> = None;
    let mut internal = false;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            if krate.is_some() {
                return Err(meta.error("`crate` is given twice"));
            }
            krate = Some(meta.value()?.call(Path::parse_mod_style)?);
            Ok(())
        } else if meta.path.is_ident("internal") {
            if internal {
                return Err(meta.error("`internal` is given twice"));
            }
            internal = true;
            Ok(())
        } else {
            Err(meta.error(UNKNOWN_ARG))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok((
        krate.unwrap_or_else(|| syn::parse_quote!(::actogrid)),
        internal,
    ))
}

/// The name of the implemented type: the last segment of its path.
fn type_name(self_ty: &Type) -> syn::Result<Ident> {
    let last = match self_ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    };
    let Some(last) = last else {
        return Err(syn::Error::new_spanned(self_ty, NOT_NAMED));
    };
    Ok(syn::ext::IdentExt::unraw(&last.ident))
}

/// Classifies the functions of the impl block, one at a time.
struct Reader {
    errors: Errors,
    name: Ident,
    self_ty: Type,
    ctors: Vec<Ctor>,
    methods: Vec<Method>,
    /// Request variants taken so far, to reject two methods (`get_x` and
    /// `getX`) that would share one.
    variants: HashMap<String, Ident>,
    ctor_variants: HashMap<String, Ident>,
}

impl Reader {
    fn function(&mut self, function: &mut ImplItemFn) {
        let helpers = take_helpers_from(&mut function.attrs, &mut self.errors);
        let exposed = !matches!(function.vis, Visibility::Inherited);
        let sig = &function.sig;
        let output = match &sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(&**ty),
        };

        if let Some(receiver) = sig.receiver() {
            if !exposed {
                // Private methods are helpers of the object: anything goes.
                helpers.misplaced(&mut self.errors, Misplaced::Private);
                return;
            }
            let by_reference = matches!(
                &*receiver.ty,
                Type::Reference(reference) if ir::is_self(&reference.elem, &self.name)
            );
            if !by_reference {
                self.errors.at(receiver, RECEIVER);
            }
            self.method(function, helpers, output);
            return;
        }

        let Some(fallible) = ir::constructs(output, &self.name) else {
            // An associated function of some other kind: not exposed.
            helpers.misplaced(&mut self.errors, Misplaced::Other);
            return;
        };
        helpers.misplaced(&mut self.errors, Misplaced::Ctor);
        if !exposed {
            return;
        }
        if let Some(asyncness) = &sig.asyncness {
            self.errors.at(asyncness, ASYNC_CTOR);
        }
        self.common_checks(function);
        let params = self.params(function);
        let variant = self.variant(&function.sig.ident, true);
        // The error type is named outside the impl block, in the check of
        // its `Display`.
        let fallible = fallible.map(|failure| match failure {
            Failure::Typed(ty) => Failure::Typed(Box::new(ir::replace_self(&ty, &self.self_ty))),
            remote => remote,
        });
        self.ctors.push(Ctor {
            ident: function.sig.ident.clone(),
            vis: function.vis.clone(),
            attrs: forwarded(&function.attrs),
            params,
            fallible,
            variant,
        });
    }

    fn method(&mut self, function: &ImplItemFn, helpers: Helpers, output: Option<&Type>) {
        self.common_checks(function);
        let params = self.params(function);
        if let Some(ty) = output {
            check_owned(ty, REFERENCE_RET, IMPL_TRAIT_RET, &mut self.errors);
        }
        let reply = Reply::of(
            output
                .map(|ty| ir::replace_self(ty, &self.self_ty))
                .as_ref(),
        );
        if helpers.oneway.is_some() && reply != Reply::Unit {
            self.errors
                .at(output.expect("a value needs a type"), ONEWAY_VALUE);
        }
        let variant = self.variant(&function.sig.ident, false);
        self.methods.push(Method {
            ident: function.sig.ident.clone(),
            vis: function.vis.clone(),
            attrs: forwarded(&function.attrs),
            params,
            is_async: function.sig.asyncness.is_some(),
            reply,
            oneway: helpers.oneway.is_some(),
            immediate: helpers.immediate.is_some(),
            variant,
        });
    }

    /// What constructors and methods share: no generics, nothing unsafe.
    fn common_checks(&mut self, function: &ImplItemFn) {
        let sig = &function.sig;
        if !sig.generics.params.is_empty() {
            self.errors.at(&sig.generics, GENERIC);
        }
        if let Some(where_clause) = &sig.generics.where_clause {
            self.errors.at(where_clause, GENERIC);
        }
        if let Some(unsafety) = &sig.unsafety {
            self.errors.at(unsafety, UNSAFE);
        }
    }

    fn params(&mut self, function: &ImplItemFn) -> Vec<Param> {
        let mut params = Vec::new();
        for input in &function.sig.inputs {
            let FnArg::Typed(typed) = input else { continue };
            check_owned(&typed.ty, REFERENCE_ARG, IMPL_TRAIT_ARG, &mut self.errors);
            match &*typed.pat {
                // `mut` only matters inside the body; the request field is
                // the same either way.
                Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                    params.push(Param {
                        ident: pat.ident.clone(),
                        ty: ir::replace_self(&typed.ty, &self.self_ty),
                    });
                }
                pat => self.errors.at(pat, PATTERN_ARG),
            }
        }
        params
    }

    fn variant(&mut self, ident: &Ident, ctor: bool) -> Ident {
        let variant = ir::variant_name(ident);
        let taken = if ctor {
            &mut self.ctor_variants
        } else {
            &mut self.variants
        };
        if let Some(other) = taken.insert(variant.to_string(), ident.clone()) {
            self.errors.at(
                ident,
                format!(
                    "`{other}` and `{ident}` both become the variant `{variant}` of the generated \
                     enum: rename one of them"
                ),
            );
        }
        variant
    }
}

/// Rejects references and `impl Trait` anywhere in an argument or result
/// type: neither can be sent to, or received from, another node.
fn check_owned(ty: &Type, reference: &str, impl_trait: &str, errors: &mut Errors) {
    struct Finder<'a> {
        reference: &'a str,
        impl_trait: &'a str,
        errors: &'a mut Errors,
    }
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_type_reference(&mut self, ty: &'ast syn::TypeReference) {
            self.errors.at(ty, self.reference);
        }
        fn visit_type_impl_trait(&mut self, ty: &'ast syn::TypeImplTrait) {
            self.errors.at(ty, self.impl_trait);
        }
        // Function pointers and trait objects cannot be serialized anyway,
        // and the references in their signatures are not arguments.
        fn visit_type_bare_fn(&mut self, _: &'ast syn::TypeBareFn) {}
        fn visit_type_trait_object(&mut self, _: &'ast syn::TypeTraitObject) {}
    }
    Finder {
        reference,
        impl_trait,
        errors,
    }
    .visit_type(ty);
}

/// The attributes worth repeating on the generated proxy method.
fn forwarded(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|attr| {
            let path = attr.path();
            path.is_ident("doc") || path.is_ident("cfg") || path.is_ident("deprecated")
        })
        .cloned()
        .collect()
}

/// `#[oneway]` and `#[immediate]` as found on one item.
#[derive(Default)]
struct Helpers {
    oneway: Option<Attribute>,
    immediate: Option<Attribute>,
}

/// Where a helper attribute was found, when it does not belong there.
#[derive(Clone, Copy)]
enum Misplaced {
    Ctor,
    Private,
    Other,
}

impl Helpers {
    /// Reports the helper attributes of an item that is not a public method.
    fn misplaced(&self, errors: &mut Errors, place: Misplaced) {
        for (name, attr) in [("oneway", &self.oneway), ("immediate", &self.immediate)] {
            let Some(attr) = attr else { continue };
            let why = match place {
                Misplaced::Ctor => "a constructor is not a request to a running object",
                Misplaced::Private => "a private method is not exposed on the proxy",
                Misplaced::Other => "only those are exposed on the proxy",
            };
            errors.at(
                attr,
                format!("`#[{name}]` goes on a public method taking `&self` or `&mut self`: {why}"),
            );
        }
    }
}

/// Removes `#[oneway]` and `#[immediate]` from an item of the impl block.
fn take_helpers(item: &mut ImplItem, errors: &mut Errors) -> Helpers {
    match item {
        ImplItem::Const(item) => take_helpers_from(&mut item.attrs, errors),
        ImplItem::Fn(item) => take_helpers_from(&mut item.attrs, errors),
        ImplItem::Type(item) => take_helpers_from(&mut item.attrs, errors),
        ImplItem::Macro(item) => take_helpers_from(&mut item.attrs, errors),
        // `Verbatim` (and kinds syn does not know yet) have no parsed
        // attributes to look at.
        _ => Helpers::default(),
    }
}

/// Removes `#[oneway]` and `#[immediate]` from `attrs`.
fn take_helpers_from(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Helpers {
    let mut helpers = Helpers::default();
    attrs.retain(|attr| {
        let (slot, name) = if attr.path().is_ident("oneway") {
            (&mut helpers.oneway, "oneway")
        } else if attr.path().is_ident("immediate") {
            (&mut helpers.immediate, "immediate")
        } else {
            return true;
        };
        if !matches!(attr.meta, syn::Meta::Path(_)) {
            errors.at(attr, format!("`#[{name}]` takes no arguments"));
        }
        *slot = Some(attr.clone());
        false
    });
    helpers
}

/// Every error found so far, combined into one.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn at(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Hands over the errors, if any.
    fn finish(&mut self) -> syn::Result<()> {
        self.0.take().map_or(Ok(()), Err)
    }
}
