//! A tiny `--name value` argument reader shared by the examples.

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed `--name value` pairs; a bare `--flag` maps to `"true"`.
pub struct Args(HashMap<String, String>);

impl Args {
    /// Reads the process arguments.
    pub fn parse() -> Args {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(arg) = it.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let value = match it.peek() {
                    Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                    _ => "true".to_string(),
                };
                map.insert(name.to_string(), value);
            }
        }
        Args(map)
    }

    /// The value of `--name`, or `default` when absent. Exits with a message
    /// when present but not parseable.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        match self.0.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("invalid value for --{name}: {v}");
                std::process::exit(2)
            }),
        }
    }

    /// The raw value of `--name`.
    #[allow(dead_code)]
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}
