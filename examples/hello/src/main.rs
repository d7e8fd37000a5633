//! Hello, active objects.
//!
//! This program starts a second process of itself, creates a `Greeter`
//! active object there, and calls it from here: each reply names the
//! process that served it. Run it with
//!
//! ```sh
//! cargo run -p actogrid-example-hello
//! ```
//!
//! The walk-through is in `examples/hello/README.md`.

use std::fmt;

use actogrid::{CallError, Future};
use serde::{Deserialize, Serialize};

/// Greets people by name and counts how many it greeted.
///
/// It is `pub`, like the `GreeterProxy` generated for it, and `Send + Sync`,
/// as every active type must be. Deriving `Serialize` and `Deserialize` is
/// optional; it lets the object migrate to another node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Greeter {
    name: String,
    greeted: u64,
}

/// The error `Greeter::greet_guest` returns for someone not on the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotInvited(pub String);

impl fmt::Display for NotInvited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not on the guest list", self.0)
    }
}

impl std::error::Error for NotInvited {}

#[actogrid::active]
impl Greeter {
    /// A greeter called `name`. Runs on the node the object is created on.
    pub fn new(name: String) -> Self {
        Greeter { name, greeted: 0 }
    }

    /// Greets `who`, saying which process answered.
    pub fn greet(&mut self, who: String) -> String {
        self.greeted += 1;
        format!(
            "{} (pid {}): hello, {who}! (greeting #{})",
            self.name,
            std::process::id(),
            self.greeted
        )
    }

    /// Greets `who` only if the name is on the guest list: a method with
    /// an error of its own.
    pub fn greet_guest(&mut self, who: String) -> Result<String, NotInvited> {
        const GUESTS: [&str; 2] = ["Ada", "Grace"];
        if GUESTS.contains(&who.as_str()) {
            Ok(self.greet(who))
        } else {
            Err(NotInvited(who))
        }
    }

    /// Waits for `message`, a future that may still be unresolved when
    /// the request arrives, and answers it: an asynchronous method.
    pub async fn answer(&mut self, message: Future<String>) -> String {
        let answer = match message.await {
            Ok(text) => format!("got \"{text}\""),
            Err(e) => format!("the message never came: {e}"),
        };
        format!("{} (pid {}): {answer}", self.name, std::process::id())
    }

    /// How many greetings so far, served ahead of queued requests.
    #[immediate]
    pub fn greeted(&self) -> u64 {
        self.greeted
    }
}

#[actogrid::main]
async fn main() -> anyhow::Result<()> {
    let rt = actogrid::current().expect("#[actogrid::main] starts a runtime");
    println!("main process: pid {}", std::process::id());

    // A second process of this very binary, serving as a node runtime.
    // It is stopped when `child` is dropped, at the end of `main`.
    let child = actogrid::spawn_node(&rt, "greeter-node").await?;
    println!(
        "started node {} in process {}",
        child.node().url(),
        child.pid()
    );

    // Create the object over there; the constructor runs in the child.
    let greeter = GreeterProxy::new(child.node(), "greeter".into()).await?;

    // A call returns a future at once; `.await` waits for the reply.
    println!("{}", greeter.greet("Ada".into()).await?);

    // Pipelining: three requests leave before any reply comes back. The
    // object serves them one at a time, in the order sent.
    let pending: Vec<_> = ["Grace", "Alan", "Barbara"]
        .into_iter()
        .map(|who| greeter.greet(who.into()))
        .collect();
    for reply in actogrid::wait_all(pending).await {
        println!("{}", reply?);
    }

    // The method's own error arrives as `CallError::Method`, distinct from
    // a crash, a timeout or a dead node.
    match greeter.greet_guest("Mallory".into()).await {
        Ok(text) => println!("{text}"),
        Err(CallError::Method(NotInvited(who))) => println!("refused: {who} is not invited"),
        Err(other) => return Err(other.into()),
    }

    // A future passed as an argument: an object in this process produces
    // the message, the greeter in the child awaits it; the value follows.
    let host = GreeterProxy::new(&rt.local_node("main"), "host".into()).await?;
    let message = host.greet("greeter".into());
    println!("{}", greeter.answer(message).await?);

    println!(
        "greetings served by the child: {}",
        greeter.greeted().await?
    );
    Ok(())
}
