//! `#[actogrid::main]`: wraps `async fn main` so the same binary serves as
//! a node runtime when it is launched as one, with the runtime settings
//! given as arguments.
//!
//! Setting names are checked here, at their span, so a misspelt one is a
//! compile error that lists the valid names. Values are parsed by the
//! runtime when the process starts (the runtime owns their grammar); one
//! that does not parse stops the process at once with a message naming
//! the attribute, before `main` or any runtime starts.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Ident, Lit, LitStr};

/// The settings of the runtime's `Config` (`Config::settings()`), which
/// this crate cannot depend on; a test of the facade crate checks that the
/// two lists agree.
pub(crate) const SETTINGS: &[&str] = &[
    "heartbeat_interval",
    "heartbeat_timeout",
    "connect_timeout",
    "call_timeout",
    "reorder_timeout",
    "handshake_timeout",
    "max_message_size",
    "max_connections",
    "max_queued_requests",
    "max_queued_bytes",
    "max_objects",
    "object_stats",
];

/// One `name = value` argument.
struct Setting {
    /// The setting's name as `Config` spells it.
    name: &'static str,
    /// The value, as text.
    value: LitStr,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let settings = settings(args);
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
    // With mistakes in the settings, `main` is still emitted (without
    // them): its absence would be one more error, about something else.
    let (settings, errors) = match settings {
        Ok(settings) => (settings, None),
        Err(errors) => (Vec::new(), Some(errors.into_compile_error())),
    };
    let settings = settings.iter().map(|Setting { name, value }| {
        // Where the value is written, for the message if it does not parse.
        let at = quote_spanned! {value.span()=>
            ::core::concat!(::core::file!(), ":", ::core::line!(), ":", ::core::column!())
        };
        quote!((#name, #value, #at))
    });
    let attrs = &function.attrs;
    let vis = &function.vis;
    let output = &function.sig.output;
    let body = &function.block;
    Ok(quote! {
        #(#attrs)*
        #vis fn main() #output {
            ::actogrid::__run_main(&[#(#settings),*], || async move #body)
        }
        #errors
    })
}

/// Reads `name = "value", ...`; every mistake is reported, each at its
/// tokens.
fn settings(args: TokenStream) -> syn::Result<Vec<Setting>> {
    let mut settings: Vec<Setting> = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let mut report = |error: syn::Error| match &mut errors {
        Some(errors) => errors.combine(error),
        None => errors = Some(error),
    };
    let parser = syn::meta::parser(|meta| {
        let Some(ident) = meta.path.get_ident() else {
            report(meta.error(format!(
                "write a runtime setting as `name = \"value\"`; the settings are: {}",
                SETTINGS.join(", ")
            )));
            return skip_value(&meta);
        };
        let name = match setting(ident) {
            Ok(name) => Some(name),
            Err(error) => {
                report(error);
                None
            }
        };
        if !meta.input.peek(syn::Token![=]) {
            report(meta.error(format!(
                "give `{ident}` a value: `{ident} = \"...\"`, as in `heartbeat_timeout = \"30s\"`"
            )));
            return Ok(());
        }
        // Text only, as everywhere settings are given: `30` alone would
        // read as milliseconds for a duration.
        let value = match meta.value()?.parse::<Lit>()? {
            Lit::Str(text) => text,
            other => {
                let example = match &other {
                    Lit::Int(int) => format!("\"{}\"", int.base10_digits()),
                    _ => "\"30s\"".to_owned(),
                };
                report(syn::Error::new_spanned(
                    other,
                    format!(
                        "write the value of `{ident}` as a string, as in `{ident} = {example}`"
                    ),
                ));
                return Ok(());
            }
        };
        let Some(name) = name else { return Ok(()) };
        if settings.iter().any(|s| s.name == name) {
            report(syn::Error::new_spanned(
                ident,
                format!("`{name}` is given twice"),
            ));
            return Ok(());
        }
        settings.push(Setting { name, value });
        Ok(())
    });
    syn::parse::Parser::parse2(parser, args)?;
    errors.map_or(Ok(settings), Err)
}

/// Consumes `= value`, if any, after a name that was already reported.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    }
    Ok(())
}

/// The setting `ident` names (any spelling: `heartbeatTimeout` too), or
/// an error listing them all, with the closest first when one is close.
fn setting(ident: &Ident) -> syn::Result<&'static str> {
    let given = normalize(&ident.to_string());
    if let Some(name) = SETTINGS.iter().find(|s| normalize(s) == given) {
        return Ok(name);
    }
    let closest = SETTINGS
        .iter()
        .map(|s| (distance(&normalize(s), &given), *s))
        .min();
    let hint = match closest {
        Some((d, name)) if d <= 3 => format!("did you mean `{name}`? "),
        _ => String::new(),
    };
    Err(syn::Error::new_spanned(
        ident,
        format!(
            "unknown runtime setting `{ident}`; {hint}the settings are: {}",
            SETTINGS.join(", ")
        ),
    ))
}

/// `heartbeatTimeout`, `heartbeat_timeout` and `HEARTBEAT_TIMEOUT` all
/// name the same setting, as in the runtime.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Levenshtein distance, for the did-you-mean hint.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(row[j]).min(above)
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors(args: TokenStream) -> Vec<String> {
        match settings(args) {
            Ok(_) => panic!("expected errors"),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn reads_settings_in_any_spelling() {
        let read = settings(quote!(
            heartbeat_timeout = "30s",
            callTimeout = "none",
            max_objects = "1000"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let pairs: Vec<(&str, String)> = read.iter().map(|s| (s.name, s.value.value())).collect();
        assert_eq!(
            pairs,
            [
                ("heartbeat_timeout", "30s".to_owned()),
                ("call_timeout", "none".to_owned()),
                ("max_objects", "1000".to_owned()),
            ]
        );
        assert!(settings(TokenStream::new()).unwrap().is_empty());
    }

    #[test]
    fn reports_every_mistake() {
        let found = errors(quote!(
            heartbeat_timout = "30s",
            call_timeout = 30,
            heartbeat_interval = 5.0,
            max_objects,
            call_timeout = "2s",
            frobnicate = "x"
        ));
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].starts_with("unknown runtime setting `heartbeat_timout`; did you mean `heartbeat_timeout`? the settings are: heartbeat_interval, "), "{}", found[0]);
        assert!(
            found[1].ends_with("as in `call_timeout = \"30\"`"),
            "{}",
            found[1]
        );
        assert!(found[2].contains("as a string"), "{}", found[2]);
        assert!(
            found[3].contains("give `max_objects` a value"),
            "{}",
            found[3]
        );
        assert!(
            found[4].starts_with("unknown runtime setting `frobnicate`; the settings are"),
            "{}",
            found[4]
        );
    }
}
