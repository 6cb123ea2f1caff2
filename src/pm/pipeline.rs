//! Textual pipelines: `fold-constants,fold-batchnorm,insert-observers{observer=histogram}`.
//!
//! Grammar: `pipeline ::= element (',' element)*`,
//! `element ::= name ('{' key '=' value (',' key '=' value)* '}')?`.
//! Names and keys are `[a-z0-9_-]+`; values run to the next `,` or `}`.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;

/// One pass in pipeline text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineElement {
    pub name: String,
    pub options: BTreeMap<String, String>,
}

/// Parsed pipeline text.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PipelineSpec(pub Vec<PipelineElement>);

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl PipelineSpec {
    pub fn parse(text: &str) -> Result<PipelineSpec> {
        let err = |msg: String| Error::invalid(format!("pipeline `{text}`: {msg}"));
        let mut out = vec![];
        let mut rest = text.trim();
        while !rest.is_empty() {
            let end = rest.find([',', '{']).unwrap_or(rest.len());
            let name = rest[..end].trim();
            if !is_ident(name) {
                return Err(err(format!("`{name}` is not a pass name")));
            }
            rest = &rest[end..];
            let mut options = BTreeMap::new();
            if let Some(r) = rest.strip_prefix('{') {
                let close = r
                    .find('}')
                    .ok_or_else(|| err(format!("`{{` after `{name}` is not closed")))?;
                for kv in r[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| err(format!("option `{kv}` of `{name}` lacks `=`")))?;
                    let (k, v) = (k.trim(), v.trim());
                    if !is_ident(k) || v.is_empty() {
                        return Err(err(format!("bad option `{kv}` of `{name}`")));
                    }
                    if options.insert(k.to_string(), v.to_string()).is_some() {
                        return Err(err(format!("option `{k}` of `{name}` is given twice")));
                    }
                }
                rest = &r[close + 1..];
            }
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
                if rest.is_empty() {
                    return Err(err("trailing `,`".into()));
                }
            } else if !rest.is_empty() {
                return Err(err(format!("unexpected `{rest}`")));
            }
            out.push(PipelineElement {
                name: name.to_string(),
                options,
            });
        }
        Ok(PipelineSpec(out))
    }
}

impl fmt::Display for PipelineElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            let kv: Vec<String> = self
                .options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "{{{}}}", kv.join(","))?;
        }
        Ok(())
    }
}

impl fmt::Display for PipelineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in [
            "fold-constants,fold-batchnorm,fuse-activations",
            "insert-observers{observer=histogram}",
            "a{x=1,y=2},b",
            "",
        ] {
            assert_eq!(PipelineSpec::parse(text).unwrap().to_string(), text);
        }
        let spaced = PipelineSpec::parse(" a { y=2 , x=1 } , b ").unwrap();
        assert_eq!(spaced.to_string(), "a{x=1,y=2},b");
    }

    #[test]
    fn errors() {
        for bad in ["a,", "a{x}", "a{x=1", "A", "a b", "a{x=1,x=2}", ",a"] {
            assert!(PipelineSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
