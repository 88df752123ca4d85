//! Argument lists passed to processes without a shell.

use super::InvalidValue;

/// Most arguments in one list (a bound on hostile input, far above real use).
pub const MAX_ARGS: usize = 1024;
/// Most bytes in one argument.
pub const MAX_ARG_BYTES: usize = 64 * 1024;

/// A non-empty argument vector (`["sh", "-c", "date"]`): at most 1024 entries of
/// at most 64 KiB, no NUL bytes (an OS argument cannot hold one). Passed to the
/// program as is — no shell, no word splitting.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ArgList(Vec<String>);

impl ArgList {
    /// Checks a list.
    pub fn new(args: Vec<String>) -> Result<ArgList, InvalidValue> {
        if args.is_empty() {
            return Err(InvalidValue::new(
                "the list is empty",
                "write at least the program, e.g. `[\"echo\", \"hello\"]`",
            ));
        }
        if args.len() > MAX_ARGS {
            return Err(InvalidValue::new(
                format!("the list has {} entries, more than {MAX_ARGS}", args.len()),
                "pass long inputs through a file or `env`",
            ));
        }
        for (i, arg) in args.iter().enumerate() {
            if arg.contains('\0') {
                return Err(InvalidValue::new(
                    format!("entry {i} contains a NUL byte"),
                    "remove the NUL (\\0) character; arguments cannot carry it",
                ));
            }
            if arg.len() > MAX_ARG_BYTES {
                return Err(InvalidValue::new(
                    format!("entry {i} is longer than {MAX_ARG_BYTES} bytes"),
                    "pass long inputs through a file or `env`",
                ));
            }
        }
        if args[0].is_empty() {
            return Err(InvalidValue::new(
                "the first entry (the program) is empty",
                "name the program to run, e.g. `echo` or `/usr/bin/env`",
            ));
        }
        Ok(ArgList(args))
    }

    /// The arguments, program first.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for ArgList {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ArgList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of strings such as `[\"echo\", \"hello\"]`")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ArgList, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    if args.len() == MAX_ARGS {
                        return Err(serde::de::Error::custom(format!(
                            "the list has more than {MAX_ARGS} entries; pass long inputs through a file or `env`"
                        )));
                    }
                    args.push(arg);
                }
                ArgList::new(args).map_err(serde::de::Error::custom)
            }
        }
        de.deserialize_seq(V)
    }
}

impl schemars::JsonSchema for ArgList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ArgList".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ARGS,
            "items": { "type": "string" }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_must_be_nonempty_and_nul_free() {
        assert!(ArgList::new(vec![]).is_err());
        assert!(ArgList::new(vec!["a\0b".into()]).is_err());
        assert!(ArgList::new(vec!["".into()]).is_err());
        assert!(ArgList::new(vec!["echo".into(), "".into()]).is_ok());
    }
}
