//! Turning the [`ir`](super::ir) model into the proxy, the request and
//! constructor enums, the `Active` impl and the type's registration.
//!
//! Every runtime item is reached through `<krate>::__private`, so the
//! expansion works wherever the facade crate is, under whatever name.
//!
//! Each argument, result and error type is checked once, by a `const`
//! item carrying the type's span ([`checks`]): a type without `Serialize`
//! gives one error, on that type, saying what to do. The rest of the
//! expansion reaches serde through the runtime's probes, which compile
//! whatever the type, so the same mistake is not reported again from
//! inside the generated enums, the proxy and the dispatch.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitStr, Path, Type};

use super::ir::{ActiveImpl, Ctor, Failure, Method, Param, Remote, Reply};

/// The items generated for `model`, to be emitted after its impl block.
pub(super) fn expand(model: &ActiveImpl) -> TokenStream {
    let names = Names::of(model);
    let checks = checks(model, &names);
    let proxy = proxy(model, &names);
    let enums = enums(model, &names);
    let active = active_impl(model, &names);
    let Names { private, .. } = &names;
    let self_ty = &model.self_ty;
    let entry = if model.internal {
        quote!(#private::TypeEntry::internal::<#self_ty>())
    } else {
        quote!(#private::TypeEntry::of::<#self_ty>())
    };
    quote! {
        #checks
        #proxy
        #enums
        #active
        #private::inventory::submit! { #entry }
    }
}

/// Names shared by the generated items.
struct Names {
    /// `<krate>::__private`.
    private: TokenStream,
    /// The same path as a string, for `#[serde(crate = "...")]`.
    serde: LitStr,
    proxy: Ident,
    request: Ident,
    ctor: Ident,
}

impl Names {
    fn of(model: &ActiveImpl) -> Names {
        let krate = &model.krate;
        let name = &model.name;
        Names {
            private: quote!(#krate::__private),
            serde: LitStr::new(
                &format!("{}::__private::serde", path_string(krate)),
                Span::call_site(),
            ),
            proxy: format_ident!("{name}Proxy"),
            request: format_ident!("{name}Request"),
            ctor: format_ident!("{name}Ctor"),
        }
    }
}

/// `::a::b` as written, without the spaces of `TokenStream`'s display.
fn path_string(path: &Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let leading = if path.leading_colon.is_some() {
        "::"
    } else {
        ""
    };
    format!("{leading}{}", segments.join("::"))
}

/// One `const` item per type that crosses the network, checking that it
/// can: `(&&&Check::<T>::new()).argument()` (or `returned`,
/// `method_error`, `ctor_error`), where method resolution picks the
/// runtime's passing check or a failing one whose bound carries the
/// message. Each type is checked once (under the same `cfg`s), at its
/// first appearance.
fn checks(model: &ActiveImpl, names: &Names) -> TokenStream {
    let private = &names.private;
    let mut seen = HashSet::new();
    let mut out = TokenStream::new();
    let mut check = |attrs: &[Attribute], ty: &Type, what: &str| {
        let cfgs: Vec<&Attribute> = cfgs(attrs).collect();
        let key = format!("{} {}", quote!(#(#cfgs)*), ty.to_token_stream());
        if !seen.insert(key) {
            return;
        }
        // Only the call carries the type's span: the error goes there.
        let check = Ident::new(what, ty.span());
        let call = quote_spanned!(ty.span()=> (&&&#private::Check::<#ty>::new()).#check());
        out.extend(quote! {
            #(#cfgs)*
            const _: () = {
                #[allow(unused_imports)]
                use #private::{HasText as _, NoText as _, NotSerialize as _, OnlySerialize as _, Travels as _};
                #[allow(dead_code, clippy::needless_borrow)]
                fn check() {
                    #call;
                }
            };
        });
    };
    for ctor in &model.ctors {
        for param in &ctor.params {
            check(&ctor.attrs, &param.ty, "argument");
        }
        if let Some(Failure::Typed(err)) = &ctor.fallible {
            check(&ctor.attrs, err, "ctor_error");
        }
    }
    for method in &model.methods {
        for param in &method.params {
            check(&method.attrs, &param.ty, "argument");
        }
        match &method.reply {
            Reply::Value(ty) => check(&method.attrs, ty, "returned"),
            Reply::Result { ok, err } => {
                check(&method.attrs, ok, "returned");
                if let Failure::Typed(err) = err {
                    check(&method.attrs, err, "method_error");
                }
            }
            // A future is always serializable; its value type is checked
            // where it is awaited.
            Reply::Unit | Reply::Future(_) => {}
        }
    }
    out
}

/// The proxy struct, its trait impls and its methods.
fn proxy(model: &ActiveImpl, names: &Names) -> TokenStream {
    let Names { private, proxy, .. } = names;
    let self_ty = &model.self_ty;
    let type_name = model.name.to_string();
    let struct_doc = doc(&format!(
        "Typed proxy of an active `{type_name}`: a handle to the object, which may live \
         on another node.\n\n\
         Each method sends a request to the object and returns at once; the object \
         serves its requests one at a time, in the order they arrive. The proxy is \
         cheap to clone, can be passed to other active objects, and dereferences to \
         the untyped `ActiveRef` (identity, migration)."
    ));
    // The proxy names the type's registered name, not the type itself, so
    // a private active type can have a public proxy.
    let object = quote_spanned!(self_ty.span()=>
        const TYPE_NAME: &'static str = <#self_ty as #private::Active>::TYPE_NAME;
    );
    let ctors = model
        .ctors
        .iter()
        .map(|ctor| proxy_ctor(model, names, ctor));
    let methods = model
        .methods
        .iter()
        .map(|method| proxy_method(names, method));
    quote! {
        #struct_doc
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #[allow(unreachable_pub)]
        pub struct #proxy(#private::ActiveRef);

        impl #private::serde::Serialize for #proxy {
            fn serialize<S: #private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                #private::serde::Serialize::serialize(&self.0, serializer)
            }
        }

        impl<'de> #private::serde::Deserialize<'de> for #proxy {
            fn deserialize<D: #private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::core::result::Result<Self, D::Error> {
                <#private::ActiveRef as #private::serde::Deserialize<'de>>::deserialize(deserializer)
                    .map(Self)
            }
        }

        impl ::core::ops::Deref for #proxy {
            type Target = #private::ActiveRef;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl #private::Proxy for #proxy {
            #object
            fn from_ref(active_ref: #private::ActiveRef) -> Self {
                Self(active_ref)
            }
            fn active_ref(&self) -> &#private::ActiveRef {
                &self.0
            }
        }

        // The proxy mirrors the user's methods: lints about their names,
        // visibility or use were already raised (or allowed) on the originals.
        #[allow(
            dead_code,
            unreachable_pub,
            private_interfaces,
            deprecated,
            clippy::too_many_arguments,
            clippy::new_ret_no_self,
            clippy::len_without_is_empty,
            clippy::should_implement_trait,
            clippy::wrong_self_convention,
            clippy::missing_errors_doc
        )]
        impl #proxy {
            #(#ctors)*
            #(#methods)*
        }
    }
}

/// The proxy's constructor: creates the object on a node.
fn proxy_ctor(model: &ActiveImpl, names: &Names, ctor: &Ctor) -> TokenStream {
    let Names {
        private,
        ctor: ctor_enum,
        ..
    } = names;
    let Ctor {
        ident,
        vis,
        attrs,
        params,
        fallible,
        variant,
    } = ctor;
    let self_ty = &model.self_ty;
    // The node comes first and reads best as `node`, unless the constructor
    // already has an argument of that name.
    let taken = |name: &str| params.iter().any(|p| p.ident == name);
    let node = ["node", "on_node", "__ag_node"]
        .into_iter()
        .find(|name| !taken(name))
        .map(|name| Ident::new(name, Span::call_site()))
        .expect("three distinct names cannot all be taken by parameters checked one by one");
    let note = if fallible.is_some() {
        format!(
            "Creates the object on `{node}`: the future resolves to its proxy once it is \
             built there, or fails with the text of the error this constructor returned."
        )
    } else {
        format!(
            "Creates the object on `{node}`: the future resolves to its proxy once it is \
             built there."
        )
    };
    let docs = docs_with_note(attrs, &note);
    let (fields, types) = fields(params);
    quote! {
        #docs
        #vis fn #ident(#node: &#private::Node, #(#fields: #types),*) -> #private::Future<Self> {
            #private::create::<#self_ty>(#node, #ctor_enum::#variant { #(#fields),* })
        }
    }
}

/// The proxy's method: sends the request.
fn proxy_method(names: &Names, method: &Method) -> TokenStream {
    let Names {
        private, request, ..
    } = names;
    let Method {
        ident,
        vis,
        attrs,
        params,
        reply,
        oneway,
        immediate,
        variant,
        ..
    } = method;
    let method_name = method_name(ident);
    let (fields, types) = fields(params);
    let (output, call, note) = if *oneway {
        (
            quote!(::core::result::Result<(), #private::CallError>),
            quote!(send),
            "One-way: sends the request and returns at once, without a reply; the error \
             only says that the request could not be sent.",
        )
    } else {
        let waits = "Asynchronous: sends the request and returns at once; the future \
                     resolves to the reply once the object has served the request.";
        match reply {
            Reply::Unit => (quote!(#private::Future<()>), quote!(call), waits),
            Reply::Value(ty) => (quote!(#private::Future<#ty>), quote!(call), waits),
            Reply::Result {
                ok,
                err: Failure::Typed(err),
            } => (quote!(#private::Future<#ok, #err>), quote!(call), waits),
            Reply::Result {
                ok,
                err: Failure::Remote(_),
            } => (
                quote!(#private::Future<#ok, #private::RemoteError>),
                quote!(call),
                "Asynchronous: sends the request and returns at once; the future \
                 resolves to the reply once the object has served the request. An \
                 error the method returns arrives as a `RemoteError`: its text and \
                 the texts of its causes.",
            ),
            Reply::Future(ty) => (
                quote!(#ty),
                quote!(call_forwarded),
                "Asynchronous: sends the request and returns at once; the method hands \
                 back a future of its own, and the returned future resolves to that \
                 future's value.",
            ),
        }
    };
    let note = if *immediate {
        format!("{note}\n\nImmediate: served ahead of the requests already queued.")
    } else {
        note.to_owned()
    };
    let docs = docs_with_note(attrs, &note);
    quote! {
        #docs
        #vis fn #ident(&self, #(#fields: #types),*) -> #output {
            self.0.#call(
                #request::#variant { #(#fields),* },
                #private::CallInfo { method: #method_name, immediate: #immediate },
            )
        }
    }
}

/// The request and constructor enums: what travels over the network.
fn enums(model: &ActiveImpl, names: &Names) -> TokenStream {
    let Names {
        private,
        serde,
        request,
        ctor,
        ..
    } = names;
    let mut request_fields = Fields::new(private, request);
    let requests: Vec<TokenStream> = model
        .methods
        .iter()
        .map(|m| request_fields.variant(&m.attrs, &m.variant, &m.params))
        .collect();
    let mut ctor_fields = Fields::new(private, ctor);
    let ctors: Vec<TokenStream> = model
        .ctors
        .iter()
        .map(|c| ctor_fields.variant(&c.attrs, &c.variant, &c.params))
        .collect();
    let request_helpers = request_fields.helpers;
    let ctor_helpers = ctor_fields.helpers;
    // Public because the `Active` impl names them, but not part of the API:
    // hidden, and spared the lints that would ask for docs on every field.
    let attrs = quote! {
        #[doc(hidden)]
        #[allow(missing_docs, unreachable_pub, dead_code, private_interfaces)]
        #[derive(#private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = #serde)]
    };
    // The fields' encoders, reached by path from the derived impls.
    let helpers_attrs = quote! {
        #[allow(clippy::needless_borrow, clippy::ptr_arg, clippy::borrowed_box)]
    };
    quote! {
        #attrs
        pub enum #request { #(#requests)* }
        #helpers_attrs
        impl #request { #request_helpers }
        #attrs
        pub enum #ctor { #(#ctors)* }
        #helpers_attrs
        impl #ctor { #ctor_helpers }
    }
}

/// The variants of one generated enum, each field encoded and decoded by
/// a function of its own that goes through the runtime's probes: derived
/// code calling serde directly would repeat the error of a field type
/// without `Serialize` several times, inside serde.
struct Fields<'a> {
    private: &'a TokenStream,
    enum_name: &'a Ident,
    /// The functions so far.
    helpers: TokenStream,
    count: usize,
}

impl<'a> Fields<'a> {
    fn new(private: &'a TokenStream, enum_name: &'a Ident) -> Self {
        Fields {
            private,
            enum_name,
            helpers: TokenStream::new(),
            count: 0,
        }
    }

    fn variant(&mut self, attrs: &[Attribute], variant: &Ident, params: &[Param]) -> TokenStream {
        let cfgs: Vec<&Attribute> = cfgs(attrs).collect();
        let fields = params.iter().map(|param| {
            let (ident, ty) = (&param.ident, &param.ty);
            let with = self.field(&cfgs, ty);
            quote! { #with #ident: #ty }
        });
        let fields: Vec<TokenStream> = fields.collect();
        quote! { #(#cfgs)* #variant { #(#fields),* }, }
    }

    /// The encoder and decoder of one field; its `#[serde]` attribute.
    fn field(&mut self, cfgs: &[&Attribute], ty: &Type) -> TokenStream {
        let private = self.private;
        let enum_name = self.enum_name;
        let ser = format_ident!("__ag_ser_{}", self.count);
        let de = format_ident!("__ag_de_{}", self.count);
        self.count += 1;
        self.helpers.extend(quote! {
            #(#cfgs)*
            #[inline]
            fn #ser<__AgS: #private::serde::Serializer>(
                value: &#ty,
                serializer: __AgS,
            ) -> ::core::result::Result<__AgS::Ok, __AgS::Error> {
                #[allow(unused_imports)]
                use #private::{RefuseField as _, SerializeField as _};
                (&#private::Probe(value)).serialize_field(serializer)
            }
            #(#cfgs)*
            #[inline]
            fn #de<'de, __AgD: #private::serde::Deserializer<'de>>(
                deserializer: __AgD,
            ) -> ::core::result::Result<#ty, __AgD::Error> {
                #[allow(unused_imports)]
                use #private::{DeserializeField as _, RefuseDeserializeField as _};
                (&#private::ProbeDe::<#ty>(::core::marker::PhantomData))
                    .deserialize_field(deserializer)
            }
        });
        let ser = LitStr::new(&format!("{enum_name}::{ser}"), Span::call_site());
        let de = LitStr::new(&format!("{enum_name}::{de}"), Span::call_site());
        quote!(#[serde(serialize_with = #ser, deserialize_with = #de)])
    }
}

/// `impl Active`: building the object and serving its requests.
fn active_impl(model: &ActiveImpl, names: &Names) -> TokenStream {
    let Names {
        private,
        proxy,
        request,
        ctor,
        ..
    } = names;
    let self_ty = &model.self_ty;
    let type_name = format!("::{}", model.name);

    let construct_arms = model.ctors.iter().map(|c| {
        let cfgs = cfgs(&c.attrs);
        let (pattern, args) = destructure(ctor, &c.variant, &c.params);
        let ident = &c.ident;
        let text = match &c.fallible {
            None => None,
            Some(Failure::Typed(_)) => Some(quote! {{
                #[allow(unused_imports)]
                use #private::{ErrorText as _, NoErrorText as _};
                (&#private::Probe(&__ag_error)).error_text()
            }}),
            Some(Failure::Remote(remote)) => {
                let error = dyn_error(*remote);
                Some(quote! {
                    ::std::string::ToString::to_string(&#private::RemoteError::from_error(#error))
                })
            }
        };
        let built = match text {
            Some(text) => quote! {
                match Self::#ident(#(#args),*) {
                    ::core::result::Result::Ok(__ag_built) => ::core::result::Result::Ok(__ag_built),
                    ::core::result::Result::Err(__ag_error) => ::core::result::Result::Err(#text),
                }
            },
            None => quote!(::core::result::Result::Ok(Self::#ident(#(#args),*))),
        };
        quote! { #(#cfgs)* #pattern => #built, }
    });

    // Synchronous methods are served at once by `serve_now`, without a
    // future; `async` ones by the future `serve` returns. Each method is
    // called from one place only, so an error in its types shows once.
    let serve_arm = |m: &Method| {
        let cfgs = cfgs(&m.attrs);
        let (pattern, args) = destructure(request, &m.variant, &m.params);
        let ident = &m.ident;
        let mut call = quote!(Self::#ident(self, #(#args),*));
        if m.is_async {
            call = quote!(#call.await);
        }
        let served = match &m.reply {
            Reply::Unit => quote!({
                #call;
                #private::Served::value(())
            }),
            Reply::Future(_) => quote!(#private::Served::value(#call)),
            Reply::Value(_) => quote!(#private::Outgoing(#call).served_value()),
            Reply::Result { err, .. } => {
                let error = match err {
                    Failure::Typed(_) => quote!(#private::Outgoing(__ag_error).served_error()),
                    Failure::Remote(remote) => {
                        let error = dyn_error(*remote);
                        quote!(#private::Served::error(#private::RemoteError::from_error(#error)))
                    }
                };
                quote! {
                    match #call {
                        ::core::result::Result::Ok(__ag_value) => {
                            #private::Outgoing(__ag_value).served_value()
                        }
                        ::core::result::Result::Err(__ag_error) => #error,
                    }
                }
            }
        };
        if m.is_async {
            quote! { #(#cfgs)* #pattern => #served, }
        } else {
            quote! { #(#cfgs)* #pattern => ::core::result::Result::Ok(#served), }
        }
    };
    let now_arms = model.methods.iter().filter(|m| !m.is_async).map(serve_arm);
    let later_arms = model.methods.iter().filter(|m| m.is_async).map(serve_arm);
    // Without methods the request enum is empty and there is nothing to
    // await: the match alone proves the function never returns.
    let (serve, serve_now) = if model.methods.is_empty() {
        (quote!(match request {}), quote!(match request {}))
    } else {
        (
            quote! {
                match <Self as #private::Active>::serve_now(self, request) {
                    ::core::result::Result::Ok(__ag_served) => {
                        ::std::boxed::Box::pin(::core::future::ready(__ag_served))
                    }
                    ::core::result::Result::Err(__ag_request) => ::std::boxed::Box::pin(async move {
                        match __ag_request {
                            #(#later_arms)*
                            _ => ::core::unreachable!("synchronous methods are served by `serve_now`"),
                        }
                    }),
                }
            },
            quote! {
                match request {
                    #(#now_arms)*
                    __ag_request => ::core::result::Result::Err(__ag_request),
                }
            },
        )
    };

    let name_arms = model.methods.iter().map(|m| {
        let cfgs = cfgs(&m.attrs);
        let variant = &m.variant;
        let name = method_name(&m.ident);
        quote! { #(#cfgs)* #request::#variant { .. } => #name, }
    });
    // In the order of the request's variants (those compiled in).
    let name_pushes = model.methods.iter().map(|m| {
        let cfgs = cfgs(&m.attrs);
        let name = method_name(&m.ident);
        quote! { #(#cfgs)* { __ag_names.push(#name); } }
    });

    quote! {
        // The originals may be deprecated; serving them is not a new use.
        #[allow(deprecated)]
        impl #private::Active for #self_ty {
            const TYPE_NAME: &'static str = ::core::concat!(::core::module_path!(), #type_name);
            type Request = #request;
            type Ctor = #ctor;
            type Proxy = #proxy;

            fn construct(ctor: #ctor) -> ::core::result::Result<Self, ::std::string::String> {
                match ctor {
                    #(#construct_arms)*
                }
            }

            #[allow(unreachable_patterns, unreachable_code)]
            fn serve(&mut self, request: #request) -> #private::ServeFuture<'_> {
                #[allow(unused_imports)]
                use #private::{EncodeOutgoing as _, RefuseOutgoing as _};
                #serve
            }

            #[allow(unreachable_patterns, unreachable_code)]
            fn serve_now(
                &mut self,
                request: #request,
            ) -> ::core::result::Result<#private::Served, #request> {
                #[allow(unused_imports)]
                use #private::{EncodeOutgoing as _, RefuseOutgoing as _};
                #serve_now
            }

            fn method_name(request: &#request) -> &'static str {
                match *request {
                    #(#name_arms)*
                }
            }

            fn method_names() -> &'static [&'static str] {
                static NAMES: ::std::sync::OnceLock<::std::vec::Vec<&'static str>> =
                    ::std::sync::OnceLock::new();
                NAMES.get_or_init(|| {
                    #[allow(unused_mut)]
                    let mut __ag_names = ::std::vec::Vec::new();
                    #(#name_pushes)*
                    __ag_names
                })
            }

            fn state(&self) -> ::core::option::Option<&dyn #private::Encode> {
                // Autoref specialisation: `SerdeState` applies when the type
                // is `Serialize`, `NoState` (one more `&` away) otherwise.
                #[allow(unused_imports)]
                use #private::{NoState as _, SerdeState as _};
                #[allow(clippy::needless_borrow)]
                (&#private::Probe(self)).state()
            }

            fn restore(
                bytes: &[u8],
            ) -> ::core::option::Option<::core::result::Result<Self, #private::DecodeError>> {
                // Same dispatch as `state`, on `Deserialize`.
                #[allow(unused_imports)]
                use #private::{NoRestore as _, SerdeRestore as _};
                #[allow(clippy::needless_borrow)]
                (&#private::ProbeDe::<Self>(::core::marker::PhantomData)).restore(bytes)
            }
        }
    }
}

/// The `&dyn Error` inside the error value `__ag_error` of a method
/// returning one of the error types sent as text.
fn dyn_error(remote: Remote) -> TokenStream {
    match remote {
        Remote::Deref => quote!(&*__ag_error),
        Remote::Plain => quote!(&__ag_error),
    }
}

/// `Enum::Variant { field: __ag_0, .. }` and the bindings, in order. The
/// bindings are not the user's names, which could be those of unit structs
/// or constants in scope and would then be patterns, not bindings.
fn destructure(enum_name: &Ident, variant: &Ident, params: &[Param]) -> (TokenStream, Vec<Ident>) {
    let (fields, _) = fields(params);
    let bindings: Vec<Ident> = (0..params.len())
        .map(|i| format_ident!("__ag_{i}"))
        .collect();
    let pattern = quote!(#enum_name::#variant { #(#fields: #bindings),* });
    (pattern, bindings)
}

fn fields(params: &[Param]) -> (Vec<&Ident>, Vec<&syn::Type>) {
    params.iter().map(|p| (&p.ident, &p.ty)).unzip()
}

/// The name a method goes by at run time (in traces and errors).
fn method_name(ident: &Ident) -> LitStr {
    LitStr::new(&syn::ext::IdentExt::unraw(ident).to_string(), ident.span())
}

fn cfgs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident("cfg"))
}

/// The user's attributes, then `note` as a paragraph of its own.
fn docs_with_note(attrs: &[Attribute], note: &str) -> TokenStream {
    let has_docs = attrs.iter().any(|attr| attr.path().is_ident("doc"));
    let separator = has_docs.then(|| quote!(#[doc = ""]));
    let note = doc(note);
    quote! { #(#attrs)* #separator #note }
}

/// `#[doc = ...]` lines for `text`, one per line as `///` would give.
fn doc(text: &str) -> TokenStream {
    let lines = text.lines().map(|line| {
        let line = if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        };
        quote!(#[doc = #line])
    });
    quote!(#(#lines)*)
}
