//! Position-aware helpers over serde_yaml_ng: syntax scan, document start
//! positions, a bounded JSON value, and locating a field path in a document.
//!
//! serde_yaml_ng does not expose positions to visitors, but it attaches the
//! position of the node being deserialized to any error a visitor returns.
//! [`locate`] uses that on purpose: it walks to a path and fails there.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_yaml_ng::Deserializer;

/// A position in the text, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Result of scanning the whole text once, without expanding aliases.
pub struct Scan {
    /// Start position of each syntactically complete document.
    pub starts: Vec<Pos>,
    /// The first syntax error, if any, and where.
    pub syntax_error: Option<(Pos, String)>,
    /// Set when more than the allowed number of documents were found.
    pub too_many: bool,
}

const LOCATE_MARKER: &str = "\u{0}veil-locate";

/// Finds every document's start and the first syntax error. Aliases are not
/// followed, so this is linear in the text size whatever the text holds.
pub fn scan(text: &str, max_documents: usize) -> Scan {
    let mut scan = Scan {
        starts: Vec::new(),
        syntax_error: None,
        too_many: false,
    };
    let mut starts = Deserializer::from_str(text);
    for doc in Deserializer::from_str(text) {
        if let Err(error) = serde::Deserialize::deserialize(doc).map(|_: IgnoredAny| ()) {
            let pos = position(&error).unwrap_or_default();
            scan.syntax_error = Some((pos, error.to_string()));
            return scan;
        }
        if scan.starts.len() == max_documents {
            scan.too_many = true;
            return scan;
        }
        let start = starts
            .next()
            .and_then(|doc| locate_in(doc, &[]))
            .unwrap_or_default();
        scan.starts.push(start);
    }
    scan
}

/// The position an error carries, if any.
pub fn position(error: &serde_yaml_ng::Error) -> Option<Pos> {
    error.location().map(|l| Pos {
        line: l.line(),
        column: l.column(),
    })
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Field(String),
    Index(usize),
}

/// Splits `spec.probes[0].url` into segments.
pub fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(Segment::Field(rest[..open].to_owned()));
            }
            rest = &rest[open..];
            while let Some(inner) = rest.strip_prefix('[') {
                let Some(close) = inner.find(']') else { break };
                if let Ok(i) = inner[..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = &inner[close + 1..];
            }
        } else {
            out.push(Segment::Field(rest.to_owned()));
        }
    }
    out
}

/// Position of the node at `path` in the first document of `text`, or of its
/// closest existing ancestor.
pub fn locate(text: &str, path: &[Segment]) -> Option<Pos> {
    Deserializer::from_str(text)
        .next()
        .and_then(|doc| locate_in(doc, path))
}

fn locate_in(doc: Deserializer<'_>, path: &[Segment]) -> Option<Pos> {
    match Locator(path).deserialize(doc) {
        Ok(()) => None,
        Err(error) => position(&error),
    }
}

/// Walks `path` and fails at its end, so the YAML deserializer stamps the
/// failing node's position on the error.
struct Locator<'p>(&'p [Segment]);

impl<'de> DeserializeSeed<'de> for Locator<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locator<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Segment::Field(name), rest)) = self.0.split_first() {
            while let Some(key) = map.next_key::<String>()? {
                if &key == name {
                    return map.next_value_seed(Locator(rest));
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(A::Error::custom(LOCATE_MARKER))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Segment::Index(index), rest)) = self.0.split_first() {
            for _ in 0..*index {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Err(A::Error::custom(LOCATE_MARKER));
                }
            }
            if seq.next_element_seed(Locator(rest))?.is_some() {
                return Ok(());
            }
        }
        Err(A::Error::custom(LOCATE_MARKER))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(LOCATE_MARKER))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(LOCATE_MARKER))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(LOCATE_MARKER))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(LOCATE_MARKER))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(LOCATE_MARKER))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(LOCATE_MARKER))
    }
}

/// How much a document may grow through alias expansion, relative to its text.
pub const EXPANSION_FACTOR: usize = 4;
/// Allowance on top of the factor, so tiny documents can still use aliases.
const EXPANSION_SLACK: usize = 64 * 1024;

/// Budget for [`bounded_value`]: nodes and scalar bytes it may still produce.
struct Budget {
    units: Cell<usize>,
}

impl Budget {
    fn spend<E: serde::de::Error>(&self, units: usize) -> Result<(), E> {
        match self.units.get().checked_sub(units.max(1)) {
            Some(left) => {
                self.units.set(left);
                Ok(())
            }
            None => Err(E::custom(EXPANSION_MESSAGE)),
        }
    }
}

/// The message of a document whose aliases expand too far.
pub const EXPANSION_MESSAGE: &str = "aliases (`*name`) expand this document to more than 4 times its text (a \"billion laughs\" pattern); write the values out or repeat fewer large anchors";

/// Parses the first document of `text` into JSON, refusing duplicate keys and
/// alias expansion beyond [`EXPANSION_FACTOR`] × the text size.
pub fn bounded_value(text: &str) -> Result<Value, serde_yaml_ng::Error> {
    let budget = Budget {
        units: Cell::new(text.len().saturating_mul(EXPANSION_FACTOR) + EXPANSION_SLACK),
    };
    match Deserializer::from_str(text).next() {
        Some(doc) => ValueSeed(&budget).deserialize(doc),
        None => Ok(Value::Null),
    }
}

struct ValueSeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(8)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(8)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(8)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(1)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(1)?;
        let mut out = Map::new();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key_seed(KeySeed(&seen))? {
            let value = map.next_value_seed(ValueSeed(self.0))?;
            seen.insert(key.clone());
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Reads a mapping key as a string and refuses one seen before in the same mapping.
struct KeySeed<'s>(&'s BTreeSet<String>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<String, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        if self.0.contains(v) {
            return Err(E::custom(format!(
                "duplicate key `{v}`: the mapping sets it twice; keep one (YAML does not merge repeated keys)"
            )));
        }
        Ok(v.to_owned())
    }
}
