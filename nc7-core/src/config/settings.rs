//! Settings sections (`trainer_config`, `inferer_config`, ...): the top-level sections whose
//! type nc7 defines. The module that owns a section's type registers it here, so that the
//! config layers know its fields (an override may set one a file leaves to its default)
//! without depending on that module; the field list is the one serde derives, never a copy.

use serde::de::{self, DeserializeOwned, Visitor};

/// Why a settings section (`trainer_config`, `project.toml`, ...) cannot be read: every
/// problem found, each naming its field and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct SettingsError {
    /// The section (`trainer_config`) or file (`project.toml`).
    pub section: String,
    /// Each problem, as a sentence that starts with the field's path.
    pub problems: Vec<String>,
}

impl SettingsError {
    /// One problem with `section`.
    pub fn one(section: &str, problem: impl Into<String>) -> SettingsError {
        SettingsError {
            section: section.to_owned(),
            problems: vec![problem.into()],
        }
    }

    /// `Ok(value)` when there are no problems.
    pub fn check<T>(section: &str, value: T, problems: Vec<String>) -> Result<T, SettingsError> {
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(SettingsError {
                section: section.to_owned(),
                problems,
            })
        }
    }
}

/// A settings section and its fields, registered with `inventory::submit!` by the module that
/// owns its type.
pub struct SettingsSection {
    /// Its key in the resolved config (`trainer_config`).
    pub key: &'static str,
    /// Its fields, as config files name them ([`serde_fields`] of its type).
    pub fields: fn() -> &'static [&'static str],
}

inventory::collect!(SettingsSection);

/// The fields of the settings section `key`; none for a section nc7 does not define.
pub(crate) fn section_fields(key: &str) -> &'static [&'static str] {
    inventory::iter::<SettingsSection>
        .into_iter()
        .find(|s| s.key == key)
        .map_or(&[], |s| (s.fields)())
}

/// The fields a struct deriving serde's `Deserialize` reads, in declaration order: serde's own
/// list, which its derive hands to `deserialize_struct`.
pub(crate) fn serde_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut probe = FieldsProbe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A deserializer that only records the fields a struct asks for, then stops.
struct FieldsProbe(&'static [&'static str]);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields recorded")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for &mut FieldsProbe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        first: u32,
        #[serde(default, rename = "second_one")]
        second: Option<String>,
    }

    #[test]
    fn serde_names_the_fields() {
        assert_eq!(serde_fields::<Sample>(), ["first", "second_one"]);
        assert!(serde_fields::<u32>().is_empty());
    }

    #[test]
    fn registered_sections_have_their_fields() {
        assert!(section_fields("trainer_config").contains(&"batch_size"));
        assert!(section_fields("inferer_config").contains(&"prefetch_buffer_size"));
        assert!(section_fields("plugins_config").is_empty());
    }
}
