//! The result of one benchmark, printed the same way by every benchmark:
//! readable lines first, then, as the very last line, one JSON object
//!
//! ```json
//! {"bench":"…","unit":"ms","value":…,"p90":…,"baseline":"…","baseline_value":…,"ratio":…, <extra…>}
//! ```
//!
//! `value` and `p90` are the measured thing, `baseline_value` the raw cost it
//! is compared with (measured in the same run), `ratio` = value / baseline.
//! Extra keys (sizes, targets) follow, in the order they were added.

use serde_json::Value;

/// One benchmark result.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Benchmark name, as its subcommand (`descriptor-parse`).
    pub(crate) bench: String,
    /// Unit of `value`, `p90` and `baseline_value` (`ms`).
    pub(crate) unit: String,
    /// Median of the measured runs.
    pub(crate) value: f64,
    /// 90th percentile of the measured runs.
    pub(crate) p90: f64,
    /// What the baseline is.
    pub(crate) baseline: String,
    /// Median of the baseline runs.
    pub(crate) baseline_value: f64,
    /// Further keys of the JSON line, in order.
    pub(crate) extra: Vec<(String, Value)>,
    /// Readable lines printed before the summary (sizes, stages…).
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(
        bench: impl Into<String>,
        unit: impl Into<String>,
        value: f64,
        p90: f64,
        baseline: impl Into<String>,
        baseline_value: f64,
    ) -> Self {
        Self {
            bench: bench.into(),
            unit: unit.into(),
            value,
            p90,
            baseline: baseline.into(),
            baseline_value,
            extra: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a key to the JSON line.
    pub(crate) fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// Adds a measured figure to the JSON line, rounded like `value`.
    pub(crate) fn with_figure(mut self, key: impl Into<String>, value: f64) -> Self {
        self.extra.push((key.into(), round(value)));
        self
    }

    /// Adds a readable line.
    pub(crate) fn note(mut self, line: impl Into<String>) -> Self {
        self.notes.push(line.into());
        self
    }

    /// `value / baseline_value` (0 when the baseline is 0).
    pub(crate) fn ratio(&self) -> f64 {
        if self.baseline_value > 0.0 {
            self.value / self.baseline_value
        } else {
            0.0
        }
    }

    /// The readable lines.
    pub(crate) fn human(&self) -> String {
        let unit = &self.unit;
        let mut out = format!("{}\n", self.bench);
        for note in &self.notes {
            out += &format!("  {note}\n");
        }
        out += &format!(
            "  value:    median {:.3} {unit}, p90 {:.3} {unit}\n",
            self.value, self.p90
        );
        out += &format!(
            "  baseline: median {:.3} {unit} ({})\n",
            self.baseline_value, self.baseline
        );
        out += &format!("  ratio:    {:.2}\n", self.ratio());
        for (key, value) in &self.extra {
            out += &format!("  {key}: {value}\n");
        }
        out
    }

    /// The JSON line, keys in a fixed order.
    pub(crate) fn json(&self) -> String {
        let fixed: [(&str, Value); 7] = [
            ("bench", self.bench.clone().into()),
            ("unit", self.unit.clone().into()),
            ("value", round(self.value)),
            ("p90", round(self.p90)),
            ("baseline", self.baseline.clone().into()),
            ("baseline_value", round(self.baseline_value)),
            ("ratio", round(self.ratio())),
        ];
        let fields = fixed
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(self.extra.iter().map(|(k, v)| (k.as_str(), v)))
            .map(|(k, v)| format!("{}:{v}", Value::from(k)))
            .collect::<Vec<_>>();
        format!("{{{}}}", fields.join(","))
    }

    /// Prints the readable lines, then the JSON line last.
    pub(crate) fn print(&self) {
        print!("{}", self.human());
        println!("{}", self.json());
    }
}

/// Three decimals are plenty for timings, and keep the line short.
fn round(x: f64) -> Value {
    Value::from((x * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_keeps_the_key_order_and_ends_with_extras() {
        let report = Report::new("b", "ms", 3.0, 4.0, "raw", 1.5)
            .with("hosts", 10)
            .with("target_ms", 100);
        let line = report.json();
        assert_eq!(
            line,
            r#"{"bench":"b","unit":"ms","value":3.0,"p90":4.0,"baseline":"raw","baseline_value":1.5,"ratio":2.0,"hosts":10,"target_ms":100}"#
        );
        let parsed: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["ratio"], 2.0);
        assert!(!report.human().contains('{'));
    }
}
