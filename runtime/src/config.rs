//! The settings of a runtime: timeouts, intervals and resource limits.
//!
//! Every setting has a name (`heartbeat_timeout`), a default, and a text
//! form (`30s`, `64MiB`, `none`), so the same setting can be given in the
//! code ([`Config`] fields), in `#[actogrid::main(...)]`, in a descriptor's
//! `<runtimeSettings>`, or in the environment (`ACTOGRID_HEARTBEAT_TIMEOUT`).
//! A deployment passes the settings it was given to every runtime it starts
//! through that environment.

use std::fmt;
use std::time::Duration;

/// Timeouts, intervals and limits of a runtime. The defaults suit a LAN or
/// a cluster; each is a trade-off between noticing trouble quickly and
/// tolerating slow peers, or between memory and throughput.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often each end of a connection sends a heartbeat.
    pub heartbeat_interval: Duration,
    /// A connection silent this long is dead: its pending calls fail with
    /// [`CallError::NodeDied`](crate::CallError::NodeDied).
    pub heartbeat_timeout: Duration,
    /// How long to wait for a TCP + HTTP/2 connection to a runtime.
    pub connect_timeout: Duration,
    /// A default timeout for every call's future; `None` waits as long as
    /// the connection lives.
    pub call_timeout: Option<Duration>,
    /// How long a request that overtook an earlier one from the same
    /// sender waits for it before being served anyway.
    pub reorder_timeout: Duration,
    /// An accepted connection that has not completed its handshakes and
    /// opened its stream within this time is closed.
    pub handshake_timeout: Duration,
    /// Largest message (a frame of envelopes, or one envelope) read from
    /// or written to a connection.
    pub max_message_size: usize,
    /// Connections this runtime accepts at once (also capped by the
    /// process's file-descriptor limit).
    pub max_connections: usize,
    /// Requests waiting in one object's queue before the connections that
    /// bring more are paused (backpressure to the senders).
    pub max_queued_requests: usize,
    /// Payload bytes waiting in one object's queue before the connections
    /// that bring more are paused.
    pub max_queued_bytes: usize,
    /// Active objects one runtime hosts at most; creations beyond are
    /// refused.
    pub max_objects: usize,
    /// Each active object counts the requests it serves, from whom, and
    /// the size of its state, for a deployment's dashboard (see
    /// [`Runtime::objects_here`](crate::Runtime::objects_here)). A
    /// deployment with a dashboard turns it on in its runtimes.
    pub object_stats: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
            call_timeout: None,
            reorder_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            max_connections: 1024,
            max_queued_requests: 100_000,
            max_queued_bytes: 256 << 20,
            max_objects: 1_000_000,
            object_stats: false,
        }
    }
}

/// A setting that could not be applied: which, what was given, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("runtime setting `{name}`: {message}")]
pub struct ConfigError {
    /// The setting's name as given.
    pub name: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

/// What kind of value a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// A duration: `500ms`, `3s`, `2m`, `1h` (a bare number is milliseconds).
    Duration,
    /// A duration, or `none` for no limit.
    OptionalDuration,
    /// A size in bytes: `65536`, `64KiB`, `64MiB`, `1GiB` (`K`, `M`, `G` too).
    Size,
    /// A whole number.
    Count,
    /// `on` or `off` (`true`/`false`, `yes`/`no`, `1`/`0` too).
    Switch,
}

/// One setting, as [`Config::settings`] lists it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Its name (`heartbeat_timeout`).
    pub name: &'static str,
    /// What it takes.
    pub kind: SettingKind,
    /// What it does, in one line.
    pub about: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "heartbeat_interval",
        kind: SettingKind::Duration,
        about: "how often each end of a connection sends a heartbeat",
    },
    Setting {
        name: "heartbeat_timeout",
        kind: SettingKind::Duration,
        about: "a connection silent this long is dead (its calls fail with NodeDied)",
    },
    Setting {
        name: "connect_timeout",
        kind: SettingKind::Duration,
        about: "how long opening a connection to a runtime may take",
    },
    Setting {
        name: "call_timeout",
        kind: SettingKind::OptionalDuration,
        about: "default timeout of every call's future (none: as long as the connection lives)",
    },
    Setting {
        name: "reorder_timeout",
        kind: SettingKind::Duration,
        about: "how long a request that overtook an earlier one of its sender waits for it",
    },
    Setting {
        name: "handshake_timeout",
        kind: SettingKind::Duration,
        about: "an accepted connection must complete its handshakes and open its stream within this",
    },
    Setting {
        name: "max_message_size",
        kind: SettingKind::Size,
        about: "largest message read from or written to a connection",
    },
    Setting {
        name: "max_connections",
        kind: SettingKind::Count,
        about: "connections accepted at once (also capped by the file-descriptor limit)",
    },
    Setting {
        name: "max_queued_requests",
        kind: SettingKind::Count,
        about: "requests queued for one object before its senders are paused",
    },
    Setting {
        name: "max_queued_bytes",
        kind: SettingKind::Size,
        about: "payload bytes queued for one object before its senders are paused",
    },
    Setting {
        name: "max_objects",
        kind: SettingKind::Count,
        about: "active objects one runtime hosts at most",
    },
    Setting {
        name: "object_stats",
        kind: SettingKind::Switch,
        about: "objects count requests served, their senders and their state size (for dashboards)",
    },
];

/// Prefix of the environment variables that carry settings.
pub const ENV_PREFIX: &str = "ACTOGRID_";

/// `heartbeatTimeout`, `heartbeat-timeout` and `HEARTBEAT_TIMEOUT` all name
/// `heartbeat_timeout`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Config {
    /// Every setting, with what it takes and what it does.
    pub fn settings() -> &'static [Setting] {
        SETTINGS
    }

    /// The setting `name` names (any spelling), if it is one.
    pub fn setting(name: &str) -> Option<&'static Setting> {
        let wanted = normalize(name);
        SETTINGS.iter().find(|s| normalize(s.name) == wanted)
    }

    /// Sets `name` from its text form (`set("heartbeatTimeout", "30s")`),
    /// and checks it against the other settings.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        self.set_value(name, value)?;
        self.validate()
    }

    /// Sets `name` from its text form like [`Config::set`], without
    /// checking it against the other settings: when several are given
    /// together, in any order, set each, then call [`Config::validate`]
    /// (a heartbeat interval of 5 s is only valid once the timeout is
    /// longer).
    pub fn set_value(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError {
            name: name.to_owned(),
            message,
        };
        let Some(setting) = Config::setting(name) else {
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
            let close = SETTINGS
                .iter()
                .map(|s| {
                    (
                        strsim_distance(&normalize(s.name), &normalize(name)),
                        s.name,
                    )
                })
                .min();
            let hint = match close {
                Some((d, n)) if d <= 3 => format!("did you mean `{n}`? "),
                _ => String::new(),
            };
            return Err(err(format!(
                "no such setting; {hint}the settings are: {}",
                known.join(", ")
            )));
        };
        let value = value.trim();
        match setting.kind {
            SettingKind::Duration => {
                let d = parse_duration(value).map_err(err)?;
                if d.is_zero() {
                    return Err(err(format!("`{value}` is zero; give a positive duration")));
                }
                self.set_duration(setting.name, d);
            }
            SettingKind::OptionalDuration => {
                let d = match value.to_ascii_lowercase().as_str() {
                    "none" | "off" | "never" => None,
                    _ => {
                        let d = parse_duration(value).map_err(err)?;
                        if d.is_zero() {
                            return Err(err(format!(
                                "`{value}` is zero; give a positive duration, or `none`"
                            )));
                        }
                        Some(d)
                    }
                };
                self.call_timeout = d;
            }
            SettingKind::Size => {
                let n = parse_size(value).map_err(err)?;
                if n == 0 {
                    return Err(err(format!("`{value}` is zero; give a positive size")));
                }
                match setting.name {
                    "max_message_size" => self.max_message_size = n,
                    _ => self.max_queued_bytes = n,
                }
            }
            SettingKind::Count => {
                let n: usize = value
                    .replace('_', "")
                    .parse()
                    .map_err(|_| err(format!("`{value}` is not a whole number")))?;
                if n == 0 {
                    return Err(err(format!("`{value}` is zero; give a positive number")));
                }
                match setting.name {
                    "max_connections" => self.max_connections = n,
                    "max_queued_requests" => self.max_queued_requests = n,
                    _ => self.max_objects = n,
                }
            }
            SettingKind::Switch => {
                self.object_stats = match value.to_ascii_lowercase().as_str() {
                    "on" | "true" | "yes" | "1" => true,
                    "off" | "false" | "no" | "0" => false,
                    _ => return Err(err(format!("`{value}` is neither `on` nor `off`"))),
                };
            }
        }
        Ok(())
    }

    /// Checks the settings that only make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|message| ConfigError {
            name: "heartbeat_timeout".to_owned(),
            message,
        })
    }

    fn set_duration(&mut self, name: &str, d: Duration) {
        match name {
            "heartbeat_interval" => self.heartbeat_interval = d,
            "heartbeat_timeout" => self.heartbeat_timeout = d,
            "connect_timeout" => self.connect_timeout = d,
            "reorder_timeout" => self.reorder_timeout = d,
            _ => self.handshake_timeout = d,
        }
    }

    /// Settings that only make sense together.
    fn check(&self) -> Result<(), String> {
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(format!(
                "the heartbeat timeout ({:?}) must be longer than the heartbeat interval ({:?}); \
                 give it several intervals",
                self.heartbeat_timeout, self.heartbeat_interval
            ));
        }
        Ok(())
    }

    /// The text form of setting `name` (as [`Config::set`] reads it).
    pub fn get(&self, name: &str) -> Option<String> {
        let setting = Config::setting(name)?;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        Some(match setting.name {
            "heartbeat_interval" => ms(self.heartbeat_interval),
            "heartbeat_timeout" => ms(self.heartbeat_timeout),
            "connect_timeout" => ms(self.connect_timeout),
            "call_timeout" => self.call_timeout.map_or_else(|| "none".to_owned(), ms),
            "reorder_timeout" => ms(self.reorder_timeout),
            "handshake_timeout" => ms(self.handshake_timeout),
            "max_message_size" => self.max_message_size.to_string(),
            "max_connections" => self.max_connections.to_string(),
            "max_queued_requests" => self.max_queued_requests.to_string(),
            "max_queued_bytes" => self.max_queued_bytes.to_string(),
            "object_stats" => if self.object_stats { "on" } else { "off" }.to_owned(),
            _ => self.max_objects.to_string(),
        })
    }

    /// The environment variable that carries setting `name`
    /// (`ACTOGRID_HEARTBEAT_TIMEOUT`).
    pub fn env_name(name: &str) -> Option<String> {
        Config::setting(name).map(|s| format!("{ENV_PREFIX}{}", s.name.to_ascii_uppercase()))
    }

    /// Applies every setting found in the environment of this process.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_vars(std::env::vars())
    }

    /// Applies the settings among `vars` (`ACTOGRID_<SETTING>=value`),
    /// ignoring the other variables.
    pub fn apply_vars(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        for setting in SETTINGS {
            let var = format!("{ENV_PREFIX}{}", setting.name.to_ascii_uppercase());
            if let Some((_, value)) = vars.iter().find(|(k, _)| *k == var) {
                self.set_value(setting.name, value)
                    .map_err(|e| ConfigError {
                        name: var.clone(),
                        message: e.message,
                    })?;
            }
        }
        self.validate()
    }

    /// The defaults, then the environment of this process.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_env()?;
        Ok(config)
    }

    /// The settings that differ from the defaults, as environment
    /// variables: what a deployment hands to the runtimes it starts.
    pub fn to_env(&self) -> Vec<(String, String)> {
        let defaults = Config::default();
        SETTINGS
            .iter()
            .filter(|s| self.get(s.name) != defaults.get(s.name))
            .filter_map(|s| Some((Config::env_name(s.name)?, self.get(s.name)?)))
            .collect()
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in SETTINGS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={}", s.name, self.get(s.name).unwrap_or_default())?;
        }
        Ok(())
    }
}

/// Reads `500ms`, `3s`, `1.5s`, `2m`, `1h`; a bare number is milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || {
        format!("`{text}` is not a duration: write a number with a unit (ms, s, m, h), as in `30s`")
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let factor = match unit {
        "" | "ms" => 1e-3,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let secs = value * factor;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("`{text}` is too long a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Reads `65536`, `64KiB`, `64MiB`, `1GiB` (or `K`, `M`, `G`, `KB`…, all
/// powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a size: write bytes, or a number with KiB, MiB or GiB");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    value
        .checked_mul(1 << shift)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Levenshtein distance, for did-you-mean hints.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_every_spelling_and_text_form() {
        let mut c = Config::default();
        c.set("heartbeatTimeout", "30s").unwrap();
        c.set("HEARTBEAT_INTERVAL", "1.5s").unwrap();
        c.set("call-timeout", "2m").unwrap();
        c.set("max_message_size", "16MiB").unwrap();
        c.set("max_queued_requests", "1_000").unwrap();
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(1500));
        assert_eq!(c.call_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.max_message_size, 16 << 20);
        assert_eq!(c.max_queued_requests, 1000);
        c.set("call_timeout", "none").unwrap();
        assert_eq!(c.call_timeout, None);
    }

    #[test]
    fn bad_settings_say_what_and_how() {
        let mut c = Config::default();
        let e = c.set("heartbeat_timout", "3s").unwrap_err();
        assert!(
            e.to_string().contains("did you mean `heartbeat_timeout`"),
            "{e}"
        );
        let e = c.set("heartbeat_timeout", "soon").unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
        let e = c.set("heartbeat_timeout", "100ms").unwrap_err();
        assert!(
            e.to_string().contains("longer than the heartbeat interval"),
            "{e}"
        );
        assert!(c.set("max_objects", "0").is_err());
        assert!(c.set("max_message_size", "12 parsecs").is_err());
    }

    #[test]
    fn settings_given_together_are_checked_together() {
        // One at a time, the interval would pass the default timeout.
        let mut c = Config::default();
        c.set_value("heartbeat_interval", "5s").unwrap();
        c.set_value("heartbeat_timeout", "30s").unwrap();
        c.validate().unwrap();
        let mut d = Config::default();
        d.apply_vars([
            ("ACTOGRID_HEARTBEAT_TIMEOUT".to_owned(), "30s".to_owned()),
            ("ACTOGRID_HEARTBEAT_INTERVAL".to_owned(), "5s".to_owned()),
        ])
        .unwrap();
        assert_eq!(c, d);
        assert!(Config::default().set("heartbeat_interval", "5s").is_err());
    }

    #[test]
    fn the_environment_round_trips() {
        let mut c = Config::default();
        c.set("heartbeat_timeout", "20s").unwrap();
        c.set("call_timeout", "5s").unwrap();
        let env = c.to_env();
        assert_eq!(env.len(), 2, "only what differs from the defaults: {env:?}");
        let mut d = Config::default();
        d.apply_vars(env.into_iter().chain([("OTHER".into(), "x".into())]))
            .unwrap();
        assert_eq!(c, d);
        let e = d
            .apply_vars([("ACTOGRID_MAX_OBJECTS".to_owned(), "lots".to_owned())])
            .unwrap_err();
        assert!(e.to_string().contains("ACTOGRID_MAX_OBJECTS"), "{e}");
    }
}
