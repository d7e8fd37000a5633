//! A technical service of your own.
//!
//! `NeedsTool` refuses the nodes that lack a command the application runs
//! (or enough free memory) and tags the others with where the command is.
//! It is registered under a class name, named in the descriptor
//! (`services.xml` beside this crate), and applied by the deployment to
//! every node of the virtual nodes that list it, inside each node's own
//! runtime, before the program sees the node. Run it with
//!
//! ```sh
//! cargo run -q -p actogrid-example-services
//! ```
//!
//! The walk-through is in `examples/services/README.md`.

use std::path::{Path, PathBuf};

use actogrid::{Args, Deployment, NodeContext, ServiceError, TechnicalService};

/// Refuses nodes without `command` on the PATH (or with less than
/// `memoryMiB` of free memory); tags the others.
#[derive(Debug, Default)]
struct NeedsTool {
    command: String,
    memory_mib: Option<u64>,
}

impl TechnicalService for NeedsTool {
    /// Runs when the deployment loads (a bad argument stops it there, with
    /// the line of the descriptor), and again in each node's runtime.
    fn init(&mut self, args: &Args) -> Result<(), ServiceError> {
        self.command = args
            .get("command")
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| ServiceError::argument("command", "is missing"))?
            .to_owned();
        self.memory_mib = match args.get("memoryMiB") {
            None => None,
            Some(_) => Some(args.parse_or("memoryMiB", 0u64)?),
        };
        Ok(())
    }

    /// The arguments `init` reads: any other `<arg>` is reported (as a
    /// warning, with the closest of these names) when the deployment loads.
    fn arguments(&self) -> Option<&[&str]> {
        Some(&["command", "memoryMiB"])
    }

    /// Runs inside the node's runtime, on the node's machine.
    fn apply(&self, node: &NodeContext) -> Result<(), ServiceError> {
        let found = find_on_path(&self.command).ok_or_else(|| {
            ServiceError::new(format!(
                "{} has no `{}` on its PATH",
                node.host(),
                self.command
            ))
        })?;
        if let Some(need) = self.memory_mib {
            let free = node.available_memory().unwrap_or(0) >> 20;
            if free < need {
                return Err(ServiceError::new(format!(
                    "{} has {free} MiB of free memory, {need} needed",
                    node.host()
                )));
            }
        }
        node.set_property("tool", found.display().to_string());
        node.set_property("checked-on", node.host());
        Ok(())
    }
}

// One line registers the class; the runtimes (this same binary) find it too.
actogrid::technical_service!("example.NeedsTool", NeedsTool);

fn find_on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[actogrid::main]
async fn main() -> anyhow::Result<()> {
    let descriptor = Path::new(env!("CARGO_MANIFEST_DIR")).join("services.xml");
    let deployment = Deployment::load(&descriptor).await?;
    deployment.activate().await?;

    let encoders = deployment.virtual_node("Encoders")?;
    for node in encoders.nodes().await? {
        let props = encoders.properties(&node);
        println!(
            "Encoders: {} accepted, `sh` is {}",
            node.url(),
            props.get("tool").map_or("?", String::as_str)
        );
    }

    let renderers = deployment.virtual_node("Renderers")?;
    match renderers.nodes().await {
        Ok(nodes) => println!("Renderers: {} node(s), unexpectedly", nodes.len()),
        Err(e) => println!("Renderers: refused, as expected:\n{e}"),
    }
    deployment.kill().await;
    Ok(())
}
