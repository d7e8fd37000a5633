//! `actogrid.Environment`: environment variables and node properties from
//! the service's arguments.

use crate::{Args, NodeContext, ServiceError, TechnicalService};

/// `actogrid.Environment`: environment variables and node properties from
/// the service's arguments.
///
/// ```xml
/// <technicalServiceDefinition id="env" class="actogrid.Environment">
///   <arg name="env.OMP_NUM_THREADS" value="1"/>   <!-- a variable of the runtime -->
///   <arg name="site" value="lab-b"/>              <!-- a node property -->
/// </technicalServiceDefinition>
/// ```
///
/// Variables (`env.NAME`) are set when the deployment starts a runtime, so
/// they are there from its first instruction; a node acquired already
/// running keeps its own environment, and the service records what it was
/// asked to set as the property `env.NAME`. Every other argument becomes a
/// node property.
#[derive(Debug, Default)]
pub struct Environment {
    variables: Vec<(String, String)>,
    properties: Vec<(String, String)>,
}

impl TechnicalService for Environment {
    fn init(&mut self, args: &Args) -> Result<(), ServiceError> {
        self.variables.clear();
        self.properties.clear();
        for (name, value) in args.iter() {
            match name.strip_prefix("env.") {
                Some("") => return Err(ServiceError::argument(name, "names no variable")),
                Some(var) if var.contains('=') || var.chars().any(char::is_control) => {
                    return Err(ServiceError::argument(
                        name,
                        format!("`{}` is not a variable name", var.escape_debug()),
                    ));
                }
                Some(var) => self.variables.push((var.to_owned(), value.to_owned())),
                None => self.properties.push((name.to_owned(), value.to_owned())),
            }
        }
        Ok(())
    }

    fn apply(&self, node: &NodeContext) -> Result<(), ServiceError> {
        for (k, v) in &self.properties {
            node.set_property(k.clone(), v.clone());
        }
        for (k, v) in &self.variables {
            if std::env::var(k).ok().as_deref() != Some(v.as_str()) {
                tracing::debug!(
                    "{}: {k} is not {v:?} in this process (it was not started by the deployment)",
                    node.node().url()
                );
            }
            node.set_property(format!("env.{k}"), v.clone());
        }
        Ok(())
    }

    fn launch_environment(&self) -> Vec<(String, String)> {
        self.variables.clone()
    }
}
