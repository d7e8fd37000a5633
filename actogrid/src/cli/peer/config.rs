//! The configuration file of `actogrid peer --config FILE`: TOML whose keys
//! are the daemon's long option names.
//!
//! ```toml
//! listen = "0.0.0.0:7100"
//! peers = ["10.0.0.5:7100", "10.0.0.9:7100"]
//! slots = 4
//! memory-limit = "2G"
//! max-processes = 256
//! cpus = 1.5
//! disk-limit = "4G"
//! confine-network = true
//! ```
//!
//! Sizes and durations are written as on the command line (`"512M"`,
//! `"60s"`) or as plain numbers (bytes, milliseconds). An unknown key or a
//! bad value is an error that names the file, line and column.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, parse_size};

/// What a configuration file sets; `None`: not set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct File {
    pub(super) listen: Option<String>,
    pub(super) dashboard: Option<String>,
    pub(super) advertise: Option<String>,
    pub(super) peers: Option<Vec<String>>,
    pub(super) slots: Option<u32>,
    pub(super) noa: Option<u32>,
    pub(super) ttu: Option<Millis>,
    pub(super) ttl: Option<u32>,
    pub(super) answer_timeout: Option<Millis>,
    pub(super) booking_expiry: Option<Millis>,
    pub(super) passphrase_file: Option<PathBuf>,
    pub(super) pool_ca: Option<PathBuf>,
    pub(super) pool_cert: Option<PathBuf>,
    pub(super) pool_key: Option<PathBuf>,
    pub(super) insecure_open_pool: Option<bool>,
    pub(super) work_dir: Option<PathBuf>,
    pub(super) memory_limit: Option<Bytes>,
    pub(super) max_processes: Option<u32>,
    pub(super) cpus: Option<f64>,
    pub(super) nice: Option<i32>,
    pub(super) disk_limit: Option<Bytes>,
    pub(super) confine_network: Option<bool>,
    pub(super) uid_base: Option<u32>,
    pub(super) same_user: Option<bool>,
    pub(super) cgroups: Option<bool>,
    pub(super) cgroup_parent: Option<String>,
    pub(super) read_only: Option<Vec<PathBuf>>,
    pub(super) port_base: Option<u16>,
    pub(super) state_dir: Option<PathBuf>,
}

/// Reads and checks the configuration file at `path`.
pub(super) fn read(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &str) -> Result<File, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    if file.cpus.is_some_and(|c| !c.is_finite() || c <= 0.0) {
        return Err("cpus: a number of cores above 0 (1, 0.5, 4)".into());
    }
    Ok(file)
}

/// A size: `"512M"`, `"2G"`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bytes(pub(super) u64);

/// A duration: `"500ms"`, `"60s"`, `"2m"`, or a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Millis(pub(super) Duration);

/// Reads a number or a text with `parse`.
struct NumberOrText<T> {
    parse: fn(&str) -> Result<T, String>,
    from_number: fn(u64) -> T,
    expecting: &'static str,
}

impl<'de, T> serde::de::Visitor<'de> for NumberOrText<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v)
            .ok()
            .filter(|n| *n > 0)
            .map(self.from_number)
            .ok_or_else(|| E::custom(format!("{v} is not {}", self.expecting)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_any(NumberOrText {
            parse: |t| parse_size(t).map(Bytes),
            from_number: Bytes,
            expecting: "a size (\"512M\", \"2G\", or bytes)",
        })
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        d.deserialize_any(NumberOrText {
            parse: |t| parse_duration(t).map(Millis),
            from_number: |ms| Millis(Duration::from_millis(ms)),
            expecting: "a duration (\"500ms\", \"60s\", or milliseconds)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_what_the_options_set() {
        let file = parse(
            r#"
# A lender's settings.
listen = "0.0.0.0:7100"
peers = ["10.0.0.5:7100"]
slots = 2
memory-limit = "2G"
disk-limit = 1048576
ttu = "2s"
answer-timeout = 1500
cpus = 0.5
confine-network = true
read-only = ["/data"]
"#,
        )
        .unwrap();
        assert_eq!(file.listen.as_deref(), Some("0.0.0.0:7100"));
        assert_eq!(file.peers, Some(vec!["10.0.0.5:7100".to_owned()]));
        assert_eq!(file.memory_limit, Some(Bytes(2 << 30)));
        assert_eq!(file.disk_limit, Some(Bytes(1 << 20)));
        assert_eq!(file.ttu, Some(Millis(Duration::from_secs(2))));
        assert_eq!(
            file.answer_timeout,
            Some(Millis(Duration::from_millis(1500)))
        );
        assert_eq!(file.cpus, Some(0.5));
        assert_eq!(file.confine_network, Some(true));
        assert_eq!(file.read_only, Some(vec![PathBuf::from("/data")]));
    }

    #[test]
    fn a_mistake_is_reported_with_its_line_and_column() {
        let err = parse("slots = 2\nmemory-limit = \"lots\"\n").unwrap_err();
        assert!(err.contains("line 2, column 16"), "{err}");
        assert!(err.contains("`lots` is not a size"), "{err}");
        let err = parse("slot = 2\n").unwrap_err();
        assert!(
            err.contains("line 1, column 1") && err.contains("unknown field `slot`"),
            "{err}"
        );
        let err = parse("cpus = -1.0\n").unwrap_err();
        assert!(err.contains("cpus"), "{err}");
    }
}
