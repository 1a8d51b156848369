//! What saver callbacks share: where a sample's results go (spec §7).

use std::path::{Component, Path, PathBuf};

/// Where a sample is saved, before the saver adds its extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveName<'a> {
    /// Put before the name, joined with `-`.
    pub prefix: &'a str,
    /// Put after the name, joined with `-`.
    pub suffix: &'a str,
    /// The sample's own name (from a `save_names` key), if it has one.
    pub name: Option<&'a str>,
    /// Epoch, iteration and the sample's index in its batch, when known.
    pub position: Option<(usize, usize, usize)>,
}

/// The path of a sample's results in `log_dir`: `prefix-name-suffix`, the name being the
/// sample's own or `epoch_EEE_iter_IIIII_sample_SSS`. A name that would leave `log_dir` (an
/// absolute path, `..`, a NUL) is an error; names may make subfolders inside it.
pub fn save_path(log_dir: &Path, n: &SaveName<'_>) -> Result<PathBuf, String> {
    let generated;
    let name = match (n.name, n.position) {
        (Some(name), _) => Some(name),
        (None, Some((epoch, iteration, sample))) => {
            generated = format!("epoch_{epoch:03}_iter_{iteration:05}_sample_{sample:03}");
            Some(generated.as_str())
        }
        (None, None) => None,
    };
    let joined: Vec<&str> = [Some(n.prefix), name, Some(n.suffix)]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let joined = joined.join("-");
    let relative = Path::new(&joined);
    let inside = !joined.is_empty()
        && !joined.contains('\0')
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(format!(
            "the save name `{}` would leave the results folder {}; save names are plain names or relative paths inside it",
            joined.escape_debug(),
            log_dir.display()
        ));
    }
    Ok(log_dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_names_table() {
        let dir = Path::new("save_target");
        let with = |name, position| SaveName {
            prefix: "prefix",
            suffix: "suffix",
            name,
            position,
        };
        // Spec §7.
        let cases: &[(SaveName<'_>, &str)] = &[
            (
                with(Some("some_new_name"), None),
                "save_target/prefix-some_new_name-suffix",
            ),
            (
                with(None, Some((5, 10, 3))),
                "save_target/prefix-epoch_005_iter_00010_sample_003-suffix",
            ),
            (with(None, None), "save_target/prefix-suffix"),
            (
                SaveName {
                    name: Some("a/b"),
                    ..SaveName::default()
                },
                "save_target/a/b",
            ),
        ];
        for (n, expected) in cases {
            assert_eq!(save_path(dir, n).unwrap(), Path::new(expected), "{n:?}");
        }
        for bad in ["../x", "/etc/passwd", "a/../../x", "nul\0byte"] {
            let n = SaveName {
                name: Some(bad),
                ..SaveName::default()
            };
            let e = save_path(dir, &n).unwrap_err();
            assert!(
                e.contains("would leave the results folder save_target"),
                "{bad}: {e}"
            );
        }
        assert!(
            save_path(dir, &SaveName::default()).is_err(),
            "an empty name"
        );
    }
}
