//! The `replica` label a replica of a cluster puts on every series it
//! exposes, so one Prometheus scraping all replicas keeps them apart (and a
//! sum over them is the cluster's). Added to the finished exposition, so no
//! family needs to know about it.

/// `text` with `replica="<name>"` added to every sample's labels. `name` is
/// `[cluster] replica`, validated as letters, digits, '.', '_' and '-', so it
/// needs no escaping. The value is the last field of a sample line and never
/// holds a space, so the series is everything before the last space.
pub(super) fn label_every_series(text: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        match line.rsplit_once(' ') {
            Some((series, value)) if !line.starts_with('#') => {
                match series.strip_suffix('}') {
                    Some(open) => {
                        out.push_str(open);
                        out.push_str(",replica=\"");
                    }
                    None => {
                        out.push_str(series);
                        out.push_str("{replica=\"");
                    }
                }
                out.push_str(name);
                out.push_str("\"} ");
                out.push_str(value);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_gets_the_label_and_comments_stay() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
                    b{protocol=\"go\",upstream=\"x y\"} 1.5\nc_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(
            label_every_series(text, "m1"),
            "# HELP a_total A.\n# TYPE a_total counter\na_total{replica=\"m1\"} 3\n\
             b{protocol=\"go\",upstream=\"x y\",replica=\"m1\"} 1.5\n\
             c_bucket{le=\"+Inf\",replica=\"m1\"} 2\n"
        );
    }
}
