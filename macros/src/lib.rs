//! Procedural macros of actogrid.
//!
//! This crate holds `#[actogrid::active]`, which generates a typed proxy, a
//! request enum and the dispatch of an active object from its `impl` block,
//! and `#[actogrid::main]` (the same binary serving as a node runtime when
//! launched as one, with the runtime settings it is given). Users never depend on it directly: the
//! facade crate `actogrid` re-exports its macros.
//!
//! It is a proc-macro crate, so it sits at the bottom of the dependency graph
//! next to `actogrid-descriptor`; nothing here may depend on the runtime.

mod active;
mod entry;

/// Makes the type of an inherent `impl` block an *active object*: an object
/// with its own thread of control, created on a node (possibly another
/// machine) and used through a typed proxy whose calls are asynchronous.
///
/// ```ignore
/// use actogrid::prelude::*;
///
/// pub struct Counter {
///     value: u64,
/// }
///
/// #[actogrid::active]
/// impl Counter {
///     /// A counter starting at `start`.
///     pub fn new(start: u64) -> Self {
///         Counter { value: start }
///     }
///
///     /// Adds `by` and returns the new value.
///     pub fn incr(&mut self, by: u64) -> u64 {
///         self.value += by;
///         self.value
///     }
///
///     pub async fn slow(&self, ms: u64) -> Result<u64, MyError> {
///         actogrid::time::sleep(Duration::from_millis(ms)).await;
///         Ok(self.value)
///     }
///
///     /// Fails with the error and its causes, as text.
///     pub fn load(&mut self, path: String) -> anyhow::Result<u64> {
///         let text = std::fs::read_to_string(&path).context("reading the counter")?;
///         self.value = text.trim().parse()?;
///         Ok(self.value)
///     }
///
///     #[oneway]
///     pub fn log(&mut self, line: String) {
///         println!("{line}");
///     }
///
///     #[immediate]
///     pub fn peek(&self) -> u64 {
///         self.value
///     }
/// }
///
/// let counter = CounterProxy::new(&node, 10).await?; // created on `node`
/// let pending = counter.incr(5);                     // returns at once
/// counter.log("hello".into())?;                      // no reply at all
/// assert_eq!(pending.await?, 15);
/// ```
///
/// The impl block stays as written: the type is still an ordinary Rust type
/// that can be built and called locally. Next to it the attribute generates,
/// for a type `T`:
///
/// * **`TProxy`**, the typed proxy. It has one method per public method of
///   the block, taking `&self` and the same arguments, with the same
///   visibility and documentation; and one associated function per public
///   constructor, taking the node to create the object on first
///   (`TProxy::new(&node, 10)`) and returning a future of the proxy. The
///   proxy is `Clone`, `Debug`, serializable (proxies can be passed to
///   other active objects, on other nodes) and dereferences to `ActiveRef`,
///   the untyped reference, for the object's identity and migration.
/// * **`TRequest`** and **`TCtor`**, hidden enums with one variant per
///   method or constructor, named after it in `UpperCamelCase` and holding
///   its arguments: the requests that travel over the network.
/// * **`impl Active for T`**, which builds the object from a `TCtor`, serves
///   a `TRequest` by calling the method, and saves and restores the state
///   (for migration and checkpoints) when `T` implements `Serialize` and
///   `Deserialize` — without them the object simply cannot migrate.
/// * The **registration** of `T` under its full path
///   (`my_crate::module::T`), so that any node of the program can create it
///   by name.
///
/// # What is exposed
///
/// * A **constructor** is a public associated function returning `Self`
///   (or the type by name) or `Result<Self, E>` (`anyhow::Result<Self>` and
///   the other aliases below included); an error is reported to the
///   creator as text, through `E`'s `Display`, with its causes for the
///   error types sent as text. Constructors cannot be `async`: build the
///   state synchronously, then call an async method.
/// * A **method** is a public function taking `&self` or `&mut self`,
///   `async` or not. The object serves one request at a time, so `&mut self`
///   needs no lock.
/// * Private functions, and public associated functions that do not return
///   `Self`, are left alone: they are helpers of the type.
///
/// Arguments, results and errors cross the network: they must implement
/// `Serialize` and `Deserialize` (except the error types sent as text,
/// below), be owned (`String`, not `&str`) and be plain `name: Type`
/// parameters. A type that does not gives one error, on that type, saying
/// what to derive.
///
/// The type itself must be `Send + Sync + 'static`. It may be private;
/// its proxy is always `pub`.
///
/// # Return types
///
/// For `fn m(&self, ..) -> R`, the proxy method returns:
///
/// | `R`                         | proxy returns                     |
/// |-----------------------------|-----------------------------------|
/// | none, or `()`               | `Future<()>`                      |
/// | `Result<U, E>`              | `Future<U, E>`: `Err` fails the future with `E` |
/// | `Result<U, E>`, `E` sent as text (below) | `Future<U, RemoteError>` |
/// | `Future<U>`, `Future<U, E>` | the same future: the caller gets its value directly |
/// | any other `R`               | `Future<R>`                       |
///
/// `Result` and `Future` are recognised by name (the last segment of the
/// path), with two type arguments for `Result`.
///
/// **Error types sent as text.** `anyhow::Error`, `std::io::Error` and
/// boxed `dyn Error` values are not serializable. A method failing with
/// one fails its caller's future with a `RemoteError` instead: the error's
/// message and the messages of its causes (what anyhow's `{:#}` prints).
/// They are recognised by how they are written, since the attribute sees
/// tokens, not types:
///
/// * `anyhow::Result<U>`, `io::Result<U>`, `std::io::Result<U>` (one type
///   argument, with that path);
/// * `Result<U, E>` where `E` is `anyhow::Error`, `io::Error`,
///   `std::io::Error`, or `Box<dyn …Error…>` with any bounds
///   (`Box<dyn std::error::Error + Send + Sync>`).
///
/// A `Result<U>` imported under its bare name (`use anyhow::Result;`) is
/// not recognised: write the path. To choose the text yourself, return
/// `Result<U, RemoteError>` (or `Result<U, String>`).
///
/// # Helper attributes
///
/// * `#[oneway]`: the call sends the request and returns
///   `Result<(), CallError>` at once; there is no reply. Only for methods
///   returning `()`.
/// * `#[immediate]`: the request is served ahead of the requests already
///   queued (a status query that must not wait behind long work).
///
/// Both go on public methods and can be combined.
///
/// # Arguments
///
/// `#[active(crate = path::to::actogrid)]` names the facade crate when it is
/// not reachable as `::actogrid` (renamed dependency, re-export).
///
/// # Errors
///
/// The attribute reports every problem of the block at once, on the
/// offending tokens: a generic impl or method (objects are created by name
/// on remote nodes), a trait impl, a receiver other than `&self` or
/// `&mut self`, a reference or `impl Trait` argument or result, a parameter
/// pattern instead of a name, `#[oneway]` on a method returning a value,
/// `#[oneway]` or `#[immediate]` anywhere but on a public method, an `async`
/// or `unsafe` constructor, an `unsafe` method, a block without public
/// constructor, and unknown attribute arguments.
///
/// The compiler then checks each argument, result and error type once, at
/// the type: one error per type that is not serializable ("`Point` cannot
/// be an argument of an active method: it is not serializable", and what to
/// derive), or that has `Serialize` without `Deserialize`, and per
/// constructor error type without `Display`.
#[proc_macro_attribute]
pub fn active(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    active::expand(attr.into(), item.into()).into()
}

/// Wraps `async fn main` of an actogrid application, with the settings of
/// its runtimes.
///
/// The process starts a runtime of its own (serving on a free loopback
/// port) and runs `main` on it; `actogrid::current()` returns that
/// runtime. When the process was launched as a node runtime (by a
/// deployer, `actogrid::spawn_node`, or a peer: the environment holds
/// `ACTOGRID_NODE_LISTEN`), it serves as a node instead and never enters
/// `main`. Every runtime of an application thus runs the same binary, and
/// every active type exists everywhere.
///
/// ```ignore
/// #[actogrid::main(heartbeat_timeout = "30s", call_timeout = "none")]
/// async fn main() -> anyhow::Result<()> {
///     let worker = actogrid::spawn_node(&actogrid::current().unwrap(), "w").await?;
///     Ok(())
/// }
/// ```
///
/// # Runtime settings
///
/// The arguments are runtime settings, `name = "value"`: those of
/// `actogrid::Config` (`Config::settings()` lists them), with their text
/// form: durations as `500ms`, `30s`, `2m`; `call_timeout` also takes
/// `"none"`; sizes as `64MiB`; counts as `"1000"`. They apply to the
/// runtime `main` runs on and to the node runtimes this binary serves
/// (`spawn_node`); runtimes started by a deployment read theirs from the
/// environment the deployment gives them.
///
/// Precedence, lowest first: the built-in defaults, the attribute, the
/// environment (`ACTOGRID_HEARTBEAT_TIMEOUT=1m` overrides
/// `heartbeat_timeout = "30s"`), so an operator can tune a built binary.
/// `actogrid::settings()` returns the result, to start other runtimes or a
/// deployment from it.
///
/// An unknown setting name is a compile error at the name, listing the
/// valid ones (with the closest one when there is one); a value that is
/// not a string too. A value that does not parse, or a variable of the
/// environment that does not, stops the process at start-up, before
/// `main` or any runtime starts, with exit code 2 and a message naming the
/// attribute and where it is written (or the variable):
///
/// ```text
/// actogrid: runtime settings: #[actogrid::main(heartbeat_timeout = "soon")] at src/main.rs:3:37: `soon` is not a duration: write a number with a unit (ms, s, m, h), as in `30s`
/// ```
#[proc_macro_attribute]
pub fn main(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    entry::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
