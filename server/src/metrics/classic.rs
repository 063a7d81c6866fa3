//! The Prometheus text format 0.0.4, for clients that do not ask for
//! OpenMetrics (curl, `promtool check metrics`), made from the OpenMetrics
//! text prometheus-client writes. Pure.

use std::fmt::Write;

/// The OpenMetrics text `om` in the Prometheus text format 0.0.4: a
/// counter's `# HELP` and `# TYPE` name its samples (`x_total`, where
/// OpenMetrics names the family `x`), and there is no `# UNIT` or `# EOF`.
/// The only differences for what prometheus-client writes here (counters,
/// gauges, histograms; no exemplars, no `_created`).
pub fn classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len() + 1024);
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line.starts_with("# HELP ") {
            if let Some(previous) = help.replace(line) {
                push_line(&mut out, previous);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if kind == "counter" {
                if let Some(h) = help.take() {
                    let text = h
                        .strip_prefix("# HELP ")
                        .and_then(|h| h.strip_prefix(name))
                        .unwrap_or(" ");
                    let _ = writeln!(out, "# HELP {name}_total{text}");
                }
                let _ = writeln!(out, "# TYPE {name}_total counter");
                continue;
            }
        }
        if let Some(h) = help.take() {
            push_line(&mut out, h);
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        push_line(&mut out, line);
    }
    if let Some(h) = help {
        push_line(&mut out, h);
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}
