//! The examples' command lines, read with `lexopt`: `--help` prints the
//! usage and exits 0; an unknown flag, a missing value, a value that does
//! not parse or one that cannot be used (an access log that cannot be
//! opened) is an error that names it, and exits 2.

use std::collections::HashMap;
use std::str::FromStr;

/// What an example accepts: flags that take a value, and switches.
pub struct Spec {
    /// Printed for `--help` and after an error.
    pub usage: &'static str,
    /// `--name VALUE` (or `--name=VALUE`).
    pub options: &'static [&'static str],
    /// `--name` alone.
    pub switches: &'static [&'static str],
}

/// The parsed command line.
pub struct Args {
    values: HashMap<String, String>,
    /// Every `--name VALUE` in order, repeated ones included.
    every: Vec<(String, String)>,
    positional: Vec<String>,
    usage: &'static str,
}

impl Args {
    /// Reads the process arguments against `spec`; exits on `--help` (0) and
    /// on anything `spec` does not allow (2).
    pub fn parse(spec: &Spec) -> Args {
        match Args::parse_from(spec, std::env::args_os().skip(1)) {
            Ok(Some(args)) => args,
            Ok(None) => {
                println!("{}", spec.usage);
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("error: {e}\n{}", spec.usage);
                std::process::exit(2)
            }
        }
    }

    /// As [`parse`](Args::parse), from `args`; `None` for `--help`.
    pub fn parse_from(
        spec: &Spec,
        args: impl IntoIterator<Item = std::ffi::OsString>,
    ) -> Result<Option<Args>, lexopt::Error> {
        use lexopt::Arg::{Long, Short, Value};
        use lexopt::ValueExt;
        let mut parser = lexopt::Parser::from_args(args);
        let mut values = HashMap::new();
        let mut every = Vec::new();
        let mut positional = Vec::new();
        while let Some(arg) = parser.next()? {
            match arg {
                Long("help") | Short('h') => return Ok(None),
                Long(name) if spec.switches.contains(&name) => {
                    values.insert(name.to_string(), "true".to_string());
                }
                Long(name) if spec.options.contains(&name) => {
                    let name = name.to_string();
                    let value = parser.value()?.string()?;
                    every.push((name.clone(), value.clone()));
                    values.insert(name, value);
                }
                Value(v) => positional.push(v.string()?),
                other => return Err(other.unexpected()),
            }
        }
        Ok(Some(Args {
            values,
            every,
            positional,
            usage: spec.usage,
        }))
    }

    /// The value of `--name`, or `default` when absent. Exits with a message
    /// when present but not parseable.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        match self.values.get(name) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| self.fail(format!("invalid value for --{name}: {v:?}"))),
        }
    }

    /// Exits 2 with `error: {message}` and the usage: for a value that
    /// parses but cannot be used.
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        eprintln!("error: {message}\n{}", self.usage);
        std::process::exit(2)
    }

    /// The raw value of `--name`.
    #[allow(dead_code)]
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every value of `--name`, in order (a flag given several times).
    #[allow(dead_code)]
    pub fn all(&self, name: &str) -> Vec<&str> {
        let named = self.every.iter().filter(|(n, _)| n == name);
        named.map(|(_, v)| v.as_str()).collect()
    }

    /// Whether switch `--name` was given.
    #[allow(dead_code)]
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The arguments that are not flags, in order.
    #[allow(dead_code)]
    pub fn positional(&self) -> &[String] {
        &self.positional
    }
}
