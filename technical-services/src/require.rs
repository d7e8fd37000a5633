//! `actogrid.Require`: nodes must have what the application needs; the
//! others are refused (dropped, or the virtual node fails).

use std::path::Path;

use crate::{Args, NodeContext, OnFailure, ServiceError, TechnicalService};

/// `actogrid.Require`: nodes must have what the application needs; the
/// others are refused (dropped, or the virtual node fails).
///
/// ```xml
/// <technicalServiceDefinition id="needs" class="actogrid.Require">
///   <arg name="commands" value="ffmpeg convert"/>  <!-- on the PATH -->
///   <arg name="memory" value="2G"/>                <!-- available now -->
///   <arg name="cores" value="4"/>
///   <arg name="files" value="/data/set"/>          <!-- must exist -->
///   <arg name="failure" value="drop"/>             <!-- or "fail" -->
/// </technicalServiceDefinition>
/// ```
///
/// A node that has everything gets the property `require.ok = yes`.
#[derive(Debug, Default)]
pub struct Require {
    commands: Vec<String>,
    files: Vec<String>,
    memory: Option<u64>,
    cores: Option<usize>,
    fail: bool,
}

/// `2G`, `512M`, `1024K` or bytes.
fn parse_size(text: &str) -> Result<u64, ServiceError> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| {
        ServiceError::argument("memory", format!("`{text}` is not a size (2G, 512M)"))
    })?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(ServiceError::argument(
                "memory",
                format!("unknown unit `{other}` (use K, M, G or T)"),
            ));
        }
    };
    Ok(n.saturating_mul(factor))
}

/// Whether `command` is an executable file on `PATH` (or a path to one).
fn on_path(command: &str) -> bool {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt as _;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    };
    if command.contains('/') {
        return executable(Path::new(command));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(command))))
}

impl TechnicalService for Require {
    fn init(&mut self, args: &Args) -> Result<(), ServiceError> {
        let words = |name: &str| -> Vec<String> {
            args.get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        self.commands = words("commands");
        self.files = words("files");
        self.memory = args.get("memory").map(parse_size).transpose()?;
        self.cores = args
            .get("cores")
            .map(|_| args.parse_or("cores", 1usize))
            .transpose()?;
        self.fail = match args.get("failure").unwrap_or("drop") {
            "drop" => false,
            "fail" => true,
            other => {
                return Err(ServiceError::argument(
                    "failure",
                    format!("`{other}` is neither `drop` nor `fail`"),
                ));
            }
        };
        if self.commands.is_empty()
            && self.files.is_empty()
            && self.memory.is_none()
            && self.cores.is_none()
        {
            return Err(ServiceError::new(
                "nothing to require: give `commands`, `files`, `memory` or `cores`",
            ));
        }
        Ok(())
    }

    fn apply(&self, node: &NodeContext) -> Result<(), ServiceError> {
        let mut missing = Vec::new();
        for c in &self.commands {
            if !on_path(c) {
                missing.push(format!("no `{c}` on the PATH"));
            }
        }
        for f in &self.files {
            if !Path::new(f).exists() {
                missing.push(format!("no {f}"));
            }
        }
        if let Some(need) = self.memory {
            let have = node.available_memory().unwrap_or(0);
            if have < need {
                missing.push(format!(
                    "{} MiB of memory available, {} needed",
                    have >> 20,
                    need >> 20
                ));
            }
        }
        if let Some(need) = self.cores
            && node.cores() < need
        {
            missing.push(format!("{} core(s), {need} needed", node.cores()));
        }
        if !missing.is_empty() {
            return Err(ServiceError::new(format!(
                "{} lacks: {}",
                node.host(),
                missing.join("; ")
            )));
        }
        node.set_property("require.ok", "yes");
        Ok(())
    }

    fn arguments(&self) -> Option<&[&str]> {
        Some(&["commands", "files", "memory", "cores", "failure"])
    }

    fn on_failure(&self) -> OnFailure {
        if self.fail {
            OnFailure::FailDeployment
        } else {
            OnFailure::DropNode
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_arguments_are_checked() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512 M").unwrap(), 512 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3X").is_err());
        let mut r = Require::default();
        assert!(r.init(&Args::default()).is_err());
        let args: Args = [("commands", "sh"), ("failure", "maybe")]
            .into_iter()
            .collect();
        let refused = r.init(&args).unwrap_err();
        assert!(refused.message.contains("maybe"));
        assert_eq!(refused.argument.as_deref(), Some("failure"));
        let args: Args = [("commands", "sh"), ("failure", "fail")]
            .into_iter()
            .collect();
        r.init(&args).unwrap();
        assert_eq!(r.on_failure(), OnFailure::FailDeployment);
        assert!(on_path("sh"));
        assert!(!on_path("no-such-command-anywhere"));
    }
}
