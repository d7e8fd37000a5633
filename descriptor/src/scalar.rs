//! Scalar values of the descriptor language: numbers, booleans, durations,
//! batch-scheduler wall times. Each parser returns a message fit to be shown
//! after "`<value>` is not …".

use std::time::Duration;

/// Unit assumed for a duration written without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Millis,
    Seconds,
}

/// `70000` (in `default_unit`), or `250ms`, `90s`, `5m`, `2h`.
pub(crate) fn duration(text: &str, default_unit: Unit) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || {
        format!(
            "`{text}` is not a duration: write a whole number of {} or add a unit (ms, s, m, h), as in `90s`",
            if default_unit == Unit::Millis {
                "milliseconds"
            } else {
                "seconds"
            }
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    if unit.starts_with(char::is_whitespace) && !unit.trim().is_empty() {
        return Err(format!(
            "`{text}` is not a duration: write the number and its unit together, as in `{number}{}`",
            unit.trim()
        ));
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!(
            "`{text}` is a duration of zero: give a positive duration, as in `30s` (zero would time out, or repeat, at once)"
        ));
    }
    let ms_per_unit: u64 = match unit {
        "" => match default_unit {
            Unit::Millis => 1,
            Unit::Seconds => 1_000,
        },
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// SLURM's time formats: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`.
/// PBS's `HH:MM:SS` is the same syntax.
pub(crate) fn walltime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a wall time: write MM, MM:SS, HH:MM:SS or D-HH:MM:SS, as in `01:30:00`"
        )
    };
    let num = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (Some(num(d)?), rest),
        None => (None, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (h, m, s) = match (days.is_some(), parts.as_slice()) {
        (false, [m]) => (0, num(m)?, 0),
        (false, [m, s]) => (0, num(m)?, num(s)?),
        (_, [h, m, s]) => (num(h)?, num(m)?, num(s)?),
        (true, [h]) => (num(h)?, 0, 0),
        (true, [h, m]) => (num(h)?, num(m)?, 0),
        _ => return Err(bad()),
    };
    if parts.len() > 1 && (m >= 60 && parts.len() == 3 || s >= 60) {
        return Err(bad());
    }
    let secs = days.unwrap_or(0) * 86_400 + h * 3_600 + m * 60 + s;
    if secs == 0 {
        return Err(format!(
            "`{text}` is a wall time of zero: the job could not run at all"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// A strictly positive integer.
pub(crate) fn positive(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err(format!(
            "`{text}` is zero: a positive whole number is needed here"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a positive whole number")),
    }
}

/// A TCP port, 1 to 65535.
pub(crate) fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{text}` is not a port number (1 to 65535)")),
        Ok(p) => Ok(p),
    }
}

/// `true`/`false`, and ProActive's `yes`/`no`.
pub(crate) fn boolean(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(format!("`{text}` is not a boolean: write true or false")),
    }
}

/// `host:port`, `[v6]:port`.
pub(crate) fn host_port(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("`{text}` is not host:port");
    let (host, port_text) = if let Some(v6) = text.strip_prefix('[') {
        v6.split_once("]:").ok_or_else(bad)?
    } else {
        text.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(bad());
    }
    Ok((host.to_owned(), port(port_text)?))
}

/// `host:port`, `[v6]:port`, or a bare `host` / `[v6]`, which gets `default`.
pub(crate) fn host_with_default_port(text: &str, default: u16) -> Result<(String, u16), String> {
    let bare = match text.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']'),
        None => (!text.contains(':')).then_some(text),
    };
    match bare {
        Some("") => Err("no host is given".to_owned()),
        Some(host) if host.contains(['/', ' ', '[', ']']) => {
            Err(format!("`{text}` is not a host name"))
        }
        Some(host) => Ok((host.to_owned(), default)),
        None => host_port(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_the_default() {
        assert_eq!(duration("70000", Unit::Millis), Ok(Duration::from_secs(70)));
        assert_eq!(duration("30", Unit::Seconds), Ok(Duration::from_secs(30)));
        assert_eq!(
            duration("250ms", Unit::Seconds),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(duration("5m", Unit::Millis), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2h", Unit::Millis), Ok(Duration::from_secs(7200)));
        for bad in ["", "s", "-1", "1.5s", "10 weeks", "99999999999999999999"] {
            assert!(duration(bad, Unit::Millis).is_err(), "{bad}");
        }
        // A blank between number and unit, and zero, are mistakes.
        let spaced = duration("30 s", Unit::Millis).unwrap_err();
        assert!(spaced.contains("as in `30s`"), "{spaced}");
        for zero in ["0", "0s", "0ms", "00m"] {
            let e = duration(zero, Unit::Millis).unwrap_err();
            assert!(e.contains("zero"), "{zero}: {e}");
        }
    }

    #[test]
    fn walltimes_follow_slurm() {
        assert_eq!(walltime("90"), Ok(Duration::from_secs(5400)));
        assert_eq!(walltime("05:30"), Ok(Duration::from_secs(330)));
        assert_eq!(walltime("01:00:00"), Ok(Duration::from_secs(3600)));
        assert_eq!(walltime("1-00"), Ok(Duration::from_secs(86400)));
        assert_eq!(
            walltime("2-01:30"),
            Ok(Duration::from_secs(2 * 86400 + 5400))
        );
        for bad in ["", "1:2:3:4", "aa:bb", "00:00:00", "1:60:00", "10:61", "-1"] {
            assert!(walltime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_ports_booleans_addresses() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err() && positive("-2").is_err() && positive("x").is_err());
        assert!(port("0").is_err() && port("65536").is_err());
        assert_eq!(boolean("yes"), Ok(true));
        assert!(boolean("maybe").is_err());
        assert_eq!(host_port("[::1]:7"), Ok(("::1".into(), 7)));
        assert!(host_port("host").is_err() && host_port(":80").is_err());
        assert_eq!(host_with_default_port("h", 9), Ok(("h".into(), 9)));
        assert_eq!(host_with_default_port("[::1]", 9), Ok(("::1".into(), 9)));
        assert_eq!(host_with_default_port("h:7", 9), Ok(("h".into(), 7)));
        for bad in ["", "[]", "h:", "h:x", ":80", "a b"] {
            assert!(host_with_default_port(bad, 9).is_err(), "{bad}");
        }
    }
}
