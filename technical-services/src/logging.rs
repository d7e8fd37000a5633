//! `actogrid.Logging`: the log filter of the nodes' runtimes.

use std::sync::OnceLock;

use crate::{Args, NodeContext, ServiceError, TechnicalService};

type Reloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

fn reloader() -> &'static OnceLock<Reloader> {
    static RELOADER: OnceLock<Reloader> = OnceLock::new();
    &RELOADER
}

/// Installs the function that changes this process's log filter (a
/// runtime started by a deployment does); returns `false` if one was
/// already installed.
pub fn set_log_reloader(
    reload: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
) -> bool {
    reloader().set(Box::new(reload)).is_ok()
}

/// `actogrid.Logging`: the log filter of the nodes' runtimes.
///
/// ```xml
/// <technicalServiceDefinition id="logs" class="actogrid.Logging">
///   <arg name="filter" value="info,myapp=debug"/>
/// </technicalServiceDefinition>
/// ```
///
/// `filter` uses the `RUST_LOG` syntax. Runtimes the deployment starts get
/// it in `RUST_LOG`; a runtime already running (acquired) has its filter
/// changed in place when it was started by a deployment or a peer. The
/// filter is also the node property `log.filter`.
#[derive(Debug, Default)]
pub struct Logging {
    filter: String,
}

impl TechnicalService for Logging {
    fn init(&mut self, args: &Args) -> Result<(), ServiceError> {
        let filter = args
            .get("filter")
            .or_else(|| args.get("level"))
            .ok_or_else(|| {
                ServiceError::new("argument `filter` is missing (e.g. `info,myapp=debug`)")
            })?;
        let given = if args.get("filter").is_some() {
            "filter"
        } else {
            "level"
        };
        let ok = filter.split(',').all(|d| {
            let d = d.trim();
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:=-.[]{}\"".contains(c))
        });
        if !ok {
            return Err(ServiceError::argument(
                given,
                format!("`{filter}` is not a log filter"),
            ));
        }
        self.filter = filter.to_owned();
        Ok(())
    }

    fn apply(&self, node: &NodeContext) -> Result<(), ServiceError> {
        if let Some(reload) = reloader().get() {
            reload(&self.filter).map_err(ServiceError::new)?;
        }
        node.set_property("log.filter", self.filter.clone());
        Ok(())
    }

    fn arguments(&self) -> Option<&[&str]> {
        // `level` is an older spelling of `filter`.
        Some(&["filter", "level"])
    }

    fn launch_environment(&self) -> Vec<(String, String)> {
        vec![("RUST_LOG".to_owned(), self.filter.clone())]
    }

    fn conflicts_with(&self) -> Vec<String> {
        // Two filters for one process: only one can win.
        vec!["actogrid.Logging".to_owned()]
    }
}
