//! Arbitrary bytes through the whole descriptor pipeline: XML tree,
//! variables, reader, validation, then every rendering of the diagnostics
//! and, for a valid descriptor, of the deployment plan. None may panic.

#![no_main]

use std::collections::BTreeMap;

use actogrid_descriptor::{Environment, LoadOptions, load_str, plan};
use libfuzzer_sys::fuzz_target;

/// The input is named inside a directory that does not exist, so relative
/// includes fail instead of reading whatever the working directory holds.
const PATH: &str = "/nonexistent/actogrid-fuzz/input.xml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // A fixed environment keeps runs reproducible.
    let environment: BTreeMap<String, String> =
        [("HOME", "/home/fuzz"), ("USER", "fuzz"), ("PWD", "/work")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let options = LoadOptions {
        environment: Environment::Fixed(environment),
        ..LoadOptions::default()
    }
    .var("workers", "8");

    let loaded = load_str(PATH, &text, &options);
    let _ = loaded.diagnostics.render(&loaded.sources);
    let _ = loaded.diagnostics.render_short(&loaded.sources);
    let _ = loaded.diagnostics.to_json(&loaded.sources);
    if loaded.is_valid() {
        let _ = plan::render_text(&loaded.descriptor);
        let _ = plan::render_dot(&loaded.descriptor);
    }
});
