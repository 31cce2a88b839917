//! A generic labelled metric family (counters, histograms) for what is counted
//! off the hot path: upstream requests, handshake failures. A label set is
//! found by its hash and allocated once, the first time it is seen.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A value and the label values it is counted under.
type Labelled<V> = (Vec<String>, V);

/// A metric family: one value per combination of label values.
pub struct Family<V> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// By the hash of the label values; a bucket holds the (rare) collisions.
    values: RwLock<HashMap<u64, Vec<Labelled<V>>>>,
    hasher: RandomState,
}

impl<V: Default> Family<V> {
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family<V> {
        Family {
            name,
            help,
            labels,
            values: RwLock::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }

    pub fn with(&self, label_values: &[&str], f: impl FnOnce(&V)) {
        let hash = self.hasher.hash_one(label_values);
        let same = |k: &Vec<String>| {
            k.iter()
                .map(String::as_str)
                .eq(label_values.iter().copied())
        };
        {
            let values = self.values.read().unpoisoned();
            if let Some((_, value)) = values
                .get(&hash)
                .and_then(|bucket| bucket.iter().find(|(k, _)| same(k)))
            {
                f(value);
                return;
            }
        }
        let mut values = self.values.write().unpoisoned();
        let bucket = values.entry(hash).or_default();
        let index = match bucket.iter().position(|(k, _)| same(k)) {
            Some(index) => index,
            None => {
                let key = label_values.iter().map(|s| (*s).to_owned()).collect();
                bucket.push((key, V::default()));
                bucket.len() - 1
            }
        };
        f(&bucket[index].1);
    }

    /// Calls `each` for every label set and its value, in label order (the
    /// exposition's order).
    fn for_each_sorted(&self, mut each: impl FnMut(&[String], &V)) {
        let values = self.values.read().unpoisoned();
        let mut all: Vec<&Labelled<V>> = values.values().flatten().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, value) in all {
            each(labels, value);
        }
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }

    fn label_text(&self, values: &[String], extra: Option<(&str, &str)>) -> String {
        let mut pairs: Vec<String> = self
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if let Some((k, v)) = extra {
            pairs.push(format!("{k}=\"{v}\""));
        }
        if pairs.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", pairs.join(","))
        }
    }
}

impl Family<AtomicU64> {
    pub fn add(&self, label_values: &[&str], amount: u64) {
        self.with(label_values, |v| {
            v.fetch_add(amount, Ordering::Relaxed);
        });
    }

    pub fn render(&self, out: &mut String) {
        self.header(out, "counter");
        self.for_each_sorted(|labels, value| {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                self.label_text(labels, None),
                value.load(Ordering::Relaxed)
            );
        });
    }
}

impl Family<Histogram> {
    pub fn render(&self, out: &mut String) {
        self.header(out, "histogram");
        self.for_each_sorted(|labels, histogram| {
            for (bound, bucket) in BUCKETS.iter().zip(&histogram.buckets) {
                let le = bound.to_string();
                let _ = writeln!(
                    out,
                    "{}_bucket{} {}",
                    self.name,
                    self.label_text(labels, Some(("le", &le))),
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{} {count}",
                self.name,
                self.label_text(labels, Some(("le", "+Inf")))
            );
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{}_sum{} {sum}",
                self.name,
                self.label_text(labels, None)
            );
            let _ = writeln!(
                out,
                "{}_count{} {count}",
                self.name,
                self.label_text(labels, None)
            );
        });
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
