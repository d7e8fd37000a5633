//! Technical services: configuration applied uniformly to every node of a
//! virtual node, whether the node was created or acquired.
//!
//! Services are found by the `class` name written in the descriptor. Built-in
//! services are listed in [`BUILTIN_CLASSES`]; an application registers its own
//! in its binary, which is why a class that a stand-alone tool does not know is
//! only a note when a descriptor is validated outside the application.

/// Class names of the services every actogrid binary knows, with the
/// ProActive names that map onto them. The descriptor crate owns the list
/// so that validation, which sits below this crate, can use it too.
pub use actogrid_runtime::descriptor::BUILTIN_SERVICE_CLASSES as BUILTIN_CLASSES;

/// Whether `class` names a built-in technical service.
pub fn is_builtin(class: &str) -> bool {
    BUILTIN_CLASSES.contains(&class)
}
