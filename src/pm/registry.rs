//! The registry of passes by name, and pass options.

use super::pass::Pass;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Options given to a pass in pipeline text (`name{key=value,...}`). A
/// factory takes the ones it knows; [`PassOptions::finish`] rejects the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassOptions {
    pass: String,
    values: BTreeMap<String, String>,
}

impl PassOptions {
    pub fn new(pass: &str, values: BTreeMap<String, String>) -> Self {
        PassOptions {
            pass: pass.to_string(),
            values,
        }
    }

    /// Takes a string option.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// Takes and parses an option, with a default.
    pub fn take_parsed<T: FromStr>(&mut self, key: &str, default: T) -> Result<T> {
        match self.values.remove(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Error::invalid(format!(
                    "pass `{}`: option `{key}` has an invalid value `{v}`",
                    self.pass
                ))
            }),
        }
    }

    /// Fails if options were given that the pass does not know.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        if let Some(k) = self.values.keys().next() {
            return Err(Error::invalid(format!(
                "pass `{}` has no option `{k}` (options: {})",
                self.pass,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(())
    }
}

/// Builds a pass from its options.
pub type PassFactory = Box<dyn Fn(PassOptions) -> Result<Box<dyn Pass>> + Send + Sync>;

struct Entry {
    description: &'static str,
    factory: PassFactory,
}

/// Every pass that pipeline text can name. `PassRegistry::builtin()` has
/// onnxq's passes; users add their own with [`PassRegistry::register`].
#[derive(Default)]
pub struct PassRegistry {
    entries: BTreeMap<String, Entry>,
}

impl PassRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding every built-in pass.
    pub fn builtin() -> Self {
        let mut r = Self::new();
        crate::passes::register_builtin(&mut r);
        r
    }

    /// Registers a pass under `name` (replacing any previous one).
    pub fn register(
        &mut self,
        name: &str,
        description: &'static str,
        factory: impl Fn(PassOptions) -> Result<Box<dyn Pass>> + Send + Sync + 'static,
    ) {
        self.entries.insert(
            name.to_string(),
            Entry {
                description,
                factory: Box::new(factory),
            },
        );
    }

    /// Registers a pass without options, built by `Default`.
    pub fn register_simple<P: Pass + Default + 'static>(
        &mut self,
        name: &str,
        description: &'static str,
    ) {
        self.register(name, description, |opts: PassOptions| {
            opts.finish(&[])?;
            Ok(Box::new(P::default()) as Box<dyn Pass>)
        });
    }

    /// Creates a pass by name. An unknown name is an error listing the valid ones.
    pub fn create(&self, name: &str, options: BTreeMap<String, String>) -> Result<Box<dyn Pass>> {
        let entry = self.entries.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "unknown pass `{name}`; valid passes: {}",
                self.names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        (entry.factory)(PassOptions::new(name, options))
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// (name, description) of every pass, sorted by name.
    pub fn describe(&self) -> Vec<(&str, &'static str)> {
        self.entries
            .iter()
            .map(|(k, e)| (k.as_str(), e.description))
            .collect()
    }
}
