//! The model of an `#[active]` impl block once it has been checked: what the
//! code generator needs and nothing else.
//!
//! Parsing decides *whether* an item is exposed and rejects what cannot
//! travel over the network; this module describes *what* is exposed, and
//! holds the few pure rules both sides share (reading a return type, naming
//! request variants, replacing `Self`).

use syn::visit_mut::VisitMut;
use syn::{Attribute, GenericArgument, Ident, Path, PathArguments, Type, Visibility};

/// An impl block accepted by `#[active]`.
pub(super) struct ActiveImpl {
    /// Path of the facade crate (`::actogrid` unless `crate = ...` is given);
    /// every generated path goes through `<krate>::__private`.
    pub(super) krate: Path,
    /// `#[active(internal)]`: created only by its own runtime.
    pub(super) internal: bool,
    /// The implemented type, as written after `impl`.
    pub(super) self_ty: Type,
    /// Its name: the last segment of `self_ty`, which names the generated
    /// `{name}Proxy`, `{name}Request` and `{name}Ctor`.
    pub(super) name: Ident,
    /// Public constructors, in source order.
    pub(super) ctors: Vec<Ctor>,
    /// Public methods, in source order.
    pub(super) methods: Vec<Method>,
}

/// A public associated function returning `Self` or `Result<Self, E>`.
pub(super) struct Ctor {
    pub(super) ident: Ident,
    pub(super) vis: Visibility,
    /// `doc`, `cfg` and `deprecated` attributes, carried over to the proxy.
    pub(super) attrs: Vec<Attribute>,
    pub(super) params: Vec<Param>,
    /// Returns `Result<Self, E>`: the error is turned into the creation
    /// error, as text.
    pub(super) fallible: Option<Failure>,
    /// Variant of the constructor enum.
    pub(super) variant: Ident,
}

/// A public method taking `&self` or `&mut self`.
pub(super) struct Method {
    pub(super) ident: Ident,
    pub(super) vis: Visibility,
    /// `doc`, `cfg` and `deprecated` attributes, carried over to the proxy.
    pub(super) attrs: Vec<Attribute>,
    pub(super) params: Vec<Param>,
    pub(super) is_async: bool,
    pub(super) reply: Reply,
    /// `#[oneway]`: the caller does not wait for (or get) a reply.
    pub(super) oneway: bool,
    /// `#[immediate]`: served ahead of the queued requests.
    pub(super) immediate: bool,
    /// Variant of the request enum.
    pub(super) variant: Ident,
}

/// One argument: a plain name and an owned type (`Self` already replaced).
pub(super) struct Param {
    pub(super) ident: Ident,
    pub(super) ty: Type,
}

/// What a method's return type becomes on the proxy.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    /// No return type, or `()`: the proxy returns `Future<()>`.
    Unit,
    /// Any other type `R`: the proxy returns `Future<R>`.
    Value(Type),
    /// `Result<U, E>`: the proxy returns `Future<U, E>`, so the error stays
    /// typed instead of being nested in the value; or `Future<U,
    /// RemoteError>` when `E` is one of the error types sent as text.
    Result { ok: Type, err: Failure },
    /// The method hands back a future of its own: the proxy returns that
    /// same future type and the caller waits for its value directly.
    Future(Type),
}

/// The error side of a `Result`, and how it reaches the caller.
#[derive(Debug, PartialEq)]
pub(super) enum Failure {
    /// A type of the program's: it travels as itself (a method's error), or
    /// as its `Display` text (a constructor's).
    Typed(Box<Type>),
    /// An error type that is not serializable but is recognised by name
    /// (`anyhow::Error`, `io::Error`, `Box<dyn Error>`): it travels as a
    /// `RemoteError` made of its text and the texts of its causes.
    Remote(Remote),
}

/// How generated code reaches the `&dyn Error` inside a [`Failure::Remote`]
/// error value `e`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Remote {
    /// `&*e`: `anyhow::Error` and `Box<dyn Error>` dereference to it.
    Deref,
    /// `&e`: `io::Error` is one.
    Plain,
}

impl Reply {
    /// Reads a return type (absent is `None`).
    pub(super) fn of(ty: Option<&Type>) -> Reply {
        let Some(ty) = ty.map(unwrap_parens) else {
            return Reply::Unit;
        };
        if matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty()) {
            return Reply::Unit;
        }
        if let Some((ok, err)) = result_types(ty) {
            return Reply::Result {
                ok: ok.clone(),
                err,
            };
        }
        if last_segment(ty).is_some_and(|s| s.ident == "Future") {
            return Reply::Future(ty.clone());
        }
        Reply::Value(ty.clone())
    }
}

/// The value type and the failure of a `Result`: `Result<T, E>` under any
/// path, or one of the one-argument aliases `anyhow::Result<T>`,
/// `io::Result<T>` and `std::io::Result<T>`.
fn result_types(ty: &Type) -> Option<(&Type, Failure)> {
    if let Some([ok, err]) = generic_types::<2>(ty, "Result") {
        let failure = match remote_error(err) {
            Some(remote) => Failure::Remote(remote),
            None => Failure::Typed(Box::new(err.clone())),
        };
        return Some((ok, failure));
    }
    let [ok] = generic_types::<1>(ty, "Result")?;
    Some((ok, Failure::Remote(error_module(ty)?)))
}

/// Whether `ty` names an error type sent as text: `anyhow::Error`,
/// `io::Error`, `std::io::Error`, or a boxed `dyn Error` (with any
/// bounds).
fn remote_error(ty: &Type) -> Option<Remote> {
    let segment = last_segment(ty)?;
    if segment.ident == "Error" && segment.arguments.is_none() {
        return error_module(ty);
    }
    let [boxed] = generic_types::<1>(ty, "Box")?;
    let Type::TraitObject(object) = unwrap_parens(boxed) else {
        return None;
    };
    object
        .bounds
        .iter()
        .any(|bound| {
            matches!(bound, syn::TypeParamBound::Trait(t)
                if t.path.segments.last().is_some_and(|s| s.ident == "Error"))
        })
        .then_some(Remote::Deref)
}

/// Whether the path of `ty` before its last segment is `anyhow`, `io` or
/// `std::io` (with or without a leading `::`), and so how its error is
/// reached.
fn error_module(ty: &Type) -> Option<Remote> {
    let Type::Path(path) = unwrap_parens(ty) else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let segments = &path.path.segments;
    let prefix: Vec<String> = segments
        .iter()
        .take(segments.len().saturating_sub(1))
        .map(|s| s.ident.to_string())
        .collect();
    match prefix.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["anyhow"] => Some(Remote::Deref),
        ["io"] | ["std", "io"] => Some(Remote::Plain),
        _ => None,
    }
}

/// Whether `ty` is `Self` or the type's own name (without arguments).
pub(super) fn is_self(ty: &Type, name: &Ident) -> bool {
    let ty = unwrap_parens(ty);
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return false;
    }
    if path.path.is_ident("Self") {
        return true;
    }
    // The impl may name its type through a path (`impl model::Counter`); a
    // constructor written `-> Counter` or `-> model::Counter` means the same.
    path.path
        .segments
        .last()
        .is_some_and(|s| s.ident == *name && s.arguments.is_none())
}

/// For a constructor's return type: `Some(None)` for `Self`,
/// `Some(Some(failure))` for `Result<Self, E>` (or `anyhow::Result<Self>`
/// and the other aliases), `None` when it is not a constructor.
pub(super) fn constructs(ty: Option<&Type>, name: &Ident) -> Option<Option<Failure>> {
    let ty = ty?;
    if is_self(ty, name) {
        return Some(None);
    }
    match result_types(ty) {
        Some((ok, failure)) if is_self(ok, name) => Some(Some(failure)),
        _ => None,
    }
}

/// Name of the request (or constructor) variant of a method: the method name
/// in UpperCamelCase, `get_value` → `GetValue`.
pub(super) fn variant_name(method: &Ident) -> Ident {
    let name = syn::ext::IdentExt::unraw(method).to_string();
    let mut camel: String = name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect();
    // `self_` or `_2d` would give a keyword or a digit-led name: neither is
    // an identifier.
    if camel == "Self" {
        camel.push('_');
    }
    if camel.is_empty() || camel.starts_with(|c: char| c.is_ascii_digit()) {
        camel.insert(0, 'M');
    }
    Ident::new(&camel, method.span())
}

/// Replaces `Self` in `ty` by the implemented type: the generated enums and
/// proxy are other types, where `Self` would mean something else.
pub(super) fn replace_self(ty: &Type, self_ty: &Type) -> Type {
    struct Replace<'a>(&'a Type);
    impl VisitMut for Replace<'_> {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if matches!(ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident("Self"))
            {
                *ty = self.0.clone();
                return;
            }
            syn::visit_mut::visit_type_mut(self, ty);
        }
    }
    let mut ty = ty.clone();
    Replace(self_ty).visit_type_mut(&mut ty);
    ty
}

/// Strips parentheses and invisible groups (from `macro_rules!` fragments).
fn unwrap_parens(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Paren(inner) => ty = &inner.elem,
            Type::Group(inner) => ty = &inner.elem,
            _ => return ty,
        }
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match unwrap_parens(ty) {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    }
}

/// The `N` type arguments of `ty` when its last segment is `name` and it
/// has exactly `N` arguments, all types.
fn generic_types<'a, const N: usize>(ty: &'a Type, name: &str) -> Option<[&'a Type; N]> {
    let segment = last_segment(ty).filter(|s| s.ident == name)?;
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect::<Option<_>>()?;
    types.try_into().ok()
}
