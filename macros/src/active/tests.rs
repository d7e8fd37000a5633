use super::ir::{self, ActiveImpl, Failure, Remote, Reply};
use super::parse::{self, *};
use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::{ItemImpl, Type, parse_quote};

fn read(attr: TokenStream, mut item: ItemImpl) -> (syn::Result<ActiveImpl>, ItemImpl) {
    let model = parse::parse(attr, &mut item);
    (model, item)
}

fn model(item: ItemImpl) -> ActiveImpl {
    match read(TokenStream::new(), item).0 {
        Ok(model) => model,
        Err(error) => panic!("unexpected errors: {:?}", messages(error)),
    }
}

fn messages(error: syn::Error) -> Vec<String> {
    error.into_iter().map(|e| e.to_string()).collect()
}

fn errors_with(attr: TokenStream, item: ItemImpl) -> Vec<String> {
    match read(attr, item).0 {
        Ok(_) => panic!("expected errors"),
        Err(error) => messages(error),
    }
}

fn errors(item: ItemImpl) -> Vec<String> {
    errors_with(TokenStream::new(), item)
}

fn counter() -> ItemImpl {
    parse_quote! {
        impl Counter {
            /// Starts at `start`.
            pub fn new(start: u64) -> Self { todo!() }
            pub fn parse(text: String) -> Result<Counter, ParseIntError> { todo!() }
            pub fn load(path: String) -> anyhow::Result<Self> { todo!() }
            fn hidden() -> Self { todo!() }
            pub fn helper(x: &str) -> usize { x.len() }
            pub fn incr(&mut self, by: u64) -> u64 { todo!() }
            pub async fn slow(&self, ms: u64) -> Result<u64, MyError> { todo!() }
            #[oneway]
            pub fn log(&mut self, mut line: String) {}
            #[immediate]
            pub fn peek(&self) -> u64 { 0 }
            #[oneway]
            #[immediate]
            pub(crate) fn both(&self) -> () {}
            pub fn forward(&self) -> Future<u64, MyError> { todo!() }
            fn private(&self, x: &str, (a, b): (u8, u8)) -> &str { x }
        }
    }
}

#[test]
fn classifies_constructors_and_methods() {
    let model = model(counter());
    assert_eq!(model.name, "Counter");
    assert_eq!(model.krate, parse_quote!(::actogrid));

    let ctors: Vec<_> = model
        .ctors
        .iter()
        .map(|c| {
            (
                c.ident.to_string(),
                c.variant.to_string(),
                c.fallible.is_some(),
            )
        })
        .collect();
    assert_eq!(
        ctors,
        [
            ("new".into(), "New".into(), false),
            ("parse".into(), "Parse".into(), true),
            ("load".into(), "Load".into(), true),
        ]
    );
    assert_eq!(
        model.ctors[2].fallible,
        Some(Failure::Remote(Remote::Deref)),
        "`anyhow::Result<Self>` is a constructor whose error is sent as text"
    );
    assert_eq!(model.ctors[0].params[0].ident, "start");
    assert_eq!(model.ctors[0].attrs.len(), 1, "the doc comment is kept");

    let methods: Vec<_> = model
        .methods
        .iter()
        .map(|m| (m.ident.to_string(), m.is_async, m.oneway, m.immediate))
        .collect();
    assert_eq!(
        methods,
        [
            ("incr".into(), false, false, false),
            ("slow".into(), true, false, false),
            ("log".into(), false, true, false),
            ("peek".into(), false, false, true),
            ("both".into(), false, true, true),
            ("forward".into(), false, false, false),
        ]
    );
    let line = &model.methods[2].params[0];
    assert_eq!(line.ident, "line", "`mut` is dropped");
    assert_eq!(
        model.methods[4].vis.to_token_stream().to_string(),
        "pub (crate)"
    );
}

#[test]
fn maps_return_types() {
    let model = model(counter());
    let replies: Vec<&Reply> = model.methods.iter().map(|m| &m.reply).collect();
    let u64_ty: Type = parse_quote!(u64);
    assert_eq!(replies[0], &Reply::Value(u64_ty.clone()));
    assert_eq!(
        replies[1],
        &Reply::Result {
            ok: u64_ty,
            err: Failure::Typed(Box::new(parse_quote!(MyError)))
        }
    );
    assert_eq!(replies[2], &Reply::Unit);
    assert_eq!(replies[4], &Reply::Unit, "`-> ()` is unit");
    assert_eq!(
        replies[5],
        &Reply::Future(parse_quote!(Future<u64, MyError>))
    );

    // `Result` with one argument is an ordinary value, unless it is one of
    // the aliases whose error is sent as text.
    let alias: Type = parse_quote!(Result<u8>);
    assert_eq!(Reply::of(Some(&alias)), Reply::Value(alias.clone()));
    let alias: Type = parse_quote!(fmt::Result<u8>);
    assert_eq!(Reply::of(Some(&alias)), Reply::Value(alias.clone()));
    let paren: Type = parse_quote!((std::result::Result<u8, E>));
    assert!(matches!(Reply::of(Some(&paren)), Reply::Result { .. }));
    let future: Type = parse_quote!(actogrid::Future<u8>);
    assert_eq!(Reply::of(Some(&future)), Reply::Future(future.clone()));
}

#[test]
fn strips_helper_attributes() {
    let (_, item) = read(TokenStream::new(), counter());
    let text = item.to_token_stream().to_string();
    assert!(
        !text.contains("oneway") && !text.contains("immediate"),
        "{text}"
    );
    assert!(text.contains("doc"), "other attributes stay");
}

#[test]
fn strips_helper_attributes_despite_errors() {
    let (model, item) = read(
        quote!(bogus),
        parse_quote! {
            impl<T> X<T> {
                #[oneway]
                pub fn f(&self) -> u8 { 0 }
            }
        },
    );
    assert!(model.is_err());
    assert!(!item.to_token_stream().to_string().contains("oneway"));
}

#[test]
fn reads_crate_argument() {
    let (model, _) = read(quote!(crate = actogrid_runtime), counter());
    assert_eq!(model.ok().unwrap().krate, parse_quote!(actogrid_runtime));
    let (model, _) = read(quote!(crate = crate), counter());
    assert_eq!(model.ok().unwrap().krate, parse_quote!(crate));
    let (model, _) = read(quote!(crate = ::a::b,), counter());
    assert_eq!(model.ok().unwrap().krate, parse_quote!(::a::b));
}

#[test]
fn rejects_bad_arguments() {
    assert_eq!(errors_with(quote!(foo), counter()), [UNKNOWN_ARG]);
    assert_eq!(errors_with(quote!(foo = 1), counter()), [UNKNOWN_ARG]);
    assert_eq!(
        errors_with(quote!(crate = a, crate = b), counter()),
        ["`crate` is given twice"]
    );
}

#[test]
fn rejects_generics_and_trait_impls() {
    let generic: ItemImpl = parse_quote! {
        impl<T> Wrapper<T> where T: Send { pub fn new() -> Self { todo!() } }
    };
    assert_eq!(
        errors(generic),
        [GENERIC, GENERIC],
        "`<T>` and `where`, once each"
    );
    let instance: ItemImpl = parse_quote! {
        impl Wrapper<u8> { pub fn new() -> Self { todo!() } }
    };
    assert_eq!(errors(instance), [GENERIC]);
    let method: ItemImpl = parse_quote! {
        impl X {
            pub fn new() -> Self { X }
            pub fn f<T>(&self, t: T) {}
            pub fn g<'a>(&'a self) {}
        }
    };
    assert_eq!(errors(method), [GENERIC, GENERIC]);
    let with_trait: ItemImpl = parse_quote! {
        impl Default for X { fn default() -> Self { X } }
    };
    assert_eq!(errors(with_trait), [TRAIT_IMPL]);
}

#[test]
fn rejects_receivers_by_value() {
    let item: ItemImpl = parse_quote! {
        impl X {
            pub fn new() -> Self { X }
            pub fn a(self) {}
            pub fn b(mut self) {}
            pub fn c(self: Box<Self>) {}
            pub fn d(self: &Self) {}
            pub fn e(self: &mut X) {}
            fn private(self) {}
        }
    };
    assert_eq!(errors(item), [RECEIVER, RECEIVER, RECEIVER]);
}

#[test]
fn rejects_parameters_that_cannot_travel() {
    let item: ItemImpl = parse_quote! {
        impl X {
            pub fn new(name: &str) -> Self { X }
            pub fn a(&self, x: &mut u8, y: Vec<&'static str>) {}
            pub fn b(&self, (a, b): (u8, u8), _: u8) {}
            pub fn c(&self, x: impl Into<u8>) {}
            pub fn d(&self) -> &u8 { todo!() }
            pub fn e(&self) -> impl std::future::Future<Output = u8> { async { 0 } }
            pub fn f(&self, callback: fn(&u8) -> bool) {}
        }
    };
    assert_eq!(
        errors(item),
        [
            REFERENCE_ARG,
            REFERENCE_ARG,
            REFERENCE_ARG,
            PATTERN_ARG,
            PATTERN_ARG,
            IMPL_TRAIT_ARG,
            REFERENCE_RET,
            IMPL_TRAIT_RET,
        ]
    );
}

#[test]
fn rejects_misused_helpers() {
    let item: ItemImpl = parse_quote! {
        impl X {
            #[oneway]
            pub fn new() -> Self { X }
            #[immediate]
            pub fn other() -> Result<Self, E> { Ok(X) }
            #[oneway]
            pub fn value(&self) -> u8 { 0 }
            #[oneway]
            pub fn fallible(&self) -> Result<(), E> { Ok(()) }
            #[oneway]
            fn private(&self) {}
            #[immediate]
            pub fn helper() {}
            #[oneway(now)]
            pub fn args(&self) {}
            #[immediate]
            const C: u8 = 0;
        }
    };
    let errors = errors(item);
    let oneway_ctor = "`#[oneway]` goes on a public method taking `&self` or `&mut self`: \
                       a constructor is not a request to a running object";
    assert_eq!(errors[0], oneway_ctor);
    assert!(errors[1].starts_with("`#[immediate]` goes on a public method"));
    assert_eq!(errors[2], ONEWAY_VALUE);
    assert_eq!(errors[3], ONEWAY_VALUE);
    assert!(errors[4].ends_with("a private method is not exposed on the proxy"));
    assert!(errors[5].starts_with("`#[immediate]` goes on a public method"));
    assert_eq!(errors[6], "`#[oneway]` takes no arguments");
    assert!(errors[7].starts_with("`#[immediate]` goes on a public method"));
    assert_eq!(errors.len(), 8);
}

#[test]
fn rejects_async_and_unsafe_constructors() {
    let item: ItemImpl = parse_quote! {
        impl X {
            pub async fn new() -> Self { X }
            pub unsafe fn raw() -> X { X }
            pub unsafe fn poke(&mut self) {}
            async fn private() -> Self { X }
        }
    };
    assert_eq!(errors(item), [ASYNC_CTOR, UNSAFE, UNSAFE]);
}

#[test]
fn needs_a_public_constructor() {
    let item: ItemImpl = parse_quote! {
        impl X {
            fn new() -> Self { X }
            pub fn make() -> Option<Self> { None }
            pub fn get(&self) -> u8 { 0 }
        }
    };
    assert_eq!(errors(item), [NO_CTOR]);
}

#[test]
fn needs_a_named_type() {
    let item: ItemImpl = parse_quote! { impl [u8] { pub fn new() -> Self { todo!() } } };
    assert_eq!(errors(item), [NOT_NAMED]);
}

#[test]
fn reports_every_error_at_once() {
    let item: ItemImpl = parse_quote! {
        impl X {
            pub fn f(self, x: &u8) {}
            #[oneway]
            pub fn g(&self) -> u8 { 0 }
        }
    };
    assert_eq!(
        errors_with(quote!(nope), item),
        [UNKNOWN_ARG, RECEIVER, REFERENCE_ARG, ONEWAY_VALUE, NO_CTOR]
    );
}

#[test]
fn rejects_clashing_variants() {
    let item: ItemImpl = parse_quote! {
        impl X {
            pub fn new() -> Self { X }
            pub fn get_x(&self) {}
            #[allow(non_snake_case)]
            pub fn getX(&self) {}
        }
    };
    assert_eq!(
        errors(item),
        [
            "`get_x` and `getX` both become the variant `GetX` of the generated enum: rename one of them"
        ]
    );
}

#[test]
fn names_variants() {
    let name = |s: &str| ir::variant_name(&syn::parse_str(s).unwrap()).to_string();
    assert_eq!(name("get"), "Get");
    assert_eq!(name("get_value"), "GetValue");
    assert_eq!(name("__private_thing_"), "PrivateThing");
    assert_eq!(name("r#type"), "Type");
    assert_eq!(name("self_"), "Self_");
    assert_eq!(name("_2d"), "M2d");
    assert_eq!(name("already_Camel"), "AlreadyCamel");
}

#[test]
fn replaces_self() {
    let self_ty: Type = parse_quote!(model::Counter);
    let ty: Type = parse_quote!(Vec<(Self, Option<Self>)>);
    let replaced = ir::replace_self(&ty, &self_ty);
    let expected: Type = parse_quote!(Vec<(model::Counter, Option<model::Counter>)>);
    assert_eq!(replaced, expected);
}

#[test]
fn recognises_constructors() {
    let name: syn::Ident = parse_quote!(Counter);
    let ret = |ty: Type| ir::constructs(Some(&ty), &name);
    assert_eq!(ret(parse_quote!(Self)), Some(None));
    assert_eq!(ret(parse_quote!(Counter)), Some(None));
    assert_eq!(ret(parse_quote!(crate::Counter)), Some(None));
    assert_eq!(
        ret(parse_quote!(Result<Self, String>)),
        Some(Some(Failure::Typed(Box::new(parse_quote!(String)))))
    );
    assert_eq!(
        ret(parse_quote!(anyhow::Result<Self>)),
        Some(Some(Failure::Remote(Remote::Deref)))
    );
    assert_eq!(ret(parse_quote!(Result<Self>)), None);
    assert_eq!(ret(parse_quote!(Option<Self>)), None);
    assert_eq!(ret(parse_quote!(Counter<u8>)), None);
    assert_eq!(ir::constructs(None, &name), None);
}

#[test]
fn expansion_parses_and_names_items() {
    let tokens = super::expand(
        quote!(crate = actogrid_runtime),
        counter().into_token_stream(),
    );
    let file: syn::File = syn::parse2(tokens).expect("the expansion is valid Rust");
    let names: Vec<String> = file
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Struct(s) => Some(s.ident.to_string()),
            syn::Item::Enum(e) => Some(e.ident.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["CounterProxy", "CounterRequest", "CounterCtor"]);
    let text = file.to_token_stream().to_string();
    assert!(text.contains("actogrid_runtime :: __private :: Active for Counter"));
    assert!(text.contains("\"actogrid_runtime::__private::serde\""));
    assert!(!text.contains("compile_error"));
}

#[test]
fn expansion_of_errors_keeps_the_impl() {
    let tokens = super::expand(TokenStream::new(), quote!(impl X { pub fn f(self) {} }));
    let text = tokens.to_string();
    assert!(text.starts_with("impl X"), "{text}");
    assert_eq!(text.matches("compile_error").count(), 2, "{text}");
}

#[test]
fn expansion_rejects_other_items() {
    let tokens = super::expand(
        TokenStream::new(),
        quote!(
            struct X;
        ),
    );
    assert!(tokens.to_string().contains(TRAIT_IMPL));
}

#[test]
fn recognises_error_types_sent_as_text() {
    let u64_ty: Type = parse_quote!(u64);
    let remote = |remote| Reply::Result {
        ok: u64_ty.clone(),
        err: Failure::Remote(remote),
    };
    let cases: [(Type, Remote); 10] = [
        (parse_quote!(anyhow::Result<u64>), Remote::Deref),
        (parse_quote!(::anyhow::Result<u64>), Remote::Deref),
        (parse_quote!(io::Result<u64>), Remote::Plain),
        (parse_quote!(std::io::Result<u64>), Remote::Plain),
        (parse_quote!(Result<u64, anyhow::Error>), Remote::Deref),
        (parse_quote!(Result<u64, io::Error>), Remote::Plain),
        (
            parse_quote!(std::result::Result<u64, std::io::Error>),
            Remote::Plain,
        ),
        (parse_quote!(Result<u64, Box<dyn Error>>), Remote::Deref),
        (
            parse_quote!(Result<u64, Box<dyn std::error::Error + Send + Sync>>),
            Remote::Deref,
        ),
        (
            parse_quote!(anyhow::Result<u64, anyhow::Error>),
            Remote::Deref,
        ),
    ];
    for (ty, expected) in cases {
        assert_eq!(
            Reply::of(Some(&ty)),
            remote(expected),
            "{}",
            ty.to_token_stream()
        );
    }
    // Errors of the program's own stay typed, whatever their name.
    for ty in [
        parse_quote!(Result<u64, Error>),
        parse_quote!(Result<u64, my::Error>),
        parse_quote!(Result<u64, Box<MyError>>),
        parse_quote!(anyhow::Result<u64, String>),
    ] {
        let ty: Type = ty;
        assert!(
            matches!(
                Reply::of(Some(&ty)),
                Reply::Result {
                    err: Failure::Typed(_),
                    ..
                }
            ),
            "{}",
            ty.to_token_stream()
        );
    }
}
