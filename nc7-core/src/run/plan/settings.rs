//! Settings sections read into their types, and the run's device, with every problem a diagnostic naming its file.

use super::*;
use crate::config::SettingsError;

/// A plan's error list is never empty: a part that could not be planned without any error
/// having said why (which would be a bug) still gets a line.
pub(super) fn errors_or_missing(mut diags: Diagnostics) -> Diagnostics {
    if !diags.has_errors() {
        diags.push(Diagnostic::error(
            Code::MISSING_CONFIG,
            "",
            "the run could not be planned".into(),
            "run `check` for the details".into(),
        ));
    }
    diags
}

/// The file a top-level section came from.
pub(super) fn section_file<'c>(check: &'c ProjectCheck, key: &str) -> Option<&'c str> {
    check
        .config
        .tree
        .get(key)
        .and_then(|t| check.config.sources.file(t.source))
}

/// Reads a settings section with `read`; a problem is a diagnostic naming the file.
pub(super) fn settings<T>(
    check: &ProjectCheck,
    key: &str,
    diags: &mut Diagnostics,
    read: impl FnOnce(&Value) -> Result<T, SettingsError>,
) -> Option<T> {
    let value = check
        .config
        .tree
        .get(key)
        .map(|t| t.to_value())
        .unwrap_or(Value::Null);
    match read(&value) {
        Ok(t) => Some(t),
        Err(e) => {
            let file = section_file(check, key);
            // A missing section is reported as a missing config already.
            if !value.is_null() || key != "trainer_config" {
                for m in &e.problems {
                    // serde's word for a field the section does not declare.
                    let code = if m.contains("unknown field `") {
                        Code::UNKNOWN_FIELD
                    } else {
                        Code::FIELD_TYPE
                    };
                    // A value an override gave names the override, not the file.
                    let message = match overridden_by(check, key, m) {
                        Some(by) => format!("{m} (given by {by})"),
                        None => m.clone(),
                    };
                    diags.push(
                        Diagnostic::error(code, "", message, settings_help(key, m)).with_file(file),
                    );
                }
            }
            None
        }
    }
}

/// The override (`--set …`, an `NC7_…` variable) that gave the value a settings problem
/// `message` (`trainer_config.num_epochs: …`) is about, when one did.
fn overridden_by(check: &ProjectCheck, key: &str, message: &str) -> Option<String> {
    let path = message
        .split(':')
        .next()?
        .strip_prefix(key)?
        .strip_prefix('.')?;
    let mut node = check.config.tree.get(key)?;
    for part in path.split('.') {
        node = node.get(part)?;
    }
    match check.config.sources.get(node.source) {
        s @ (crate::config::Source::Env(_) | crate::config::Source::Set(_)) => Some(s.to_string()),
        _ => None,
    }
}

/// The fix for a problem `message` with the settings section `key`.
pub(super) fn settings_help(key: &str, message: &str) -> String {
    if message.contains("expected one of") {
        // serde lists the fields already.
        return format!("use one of `{key}`'s fields");
    }
    if message.contains("must be") {
        return "give a value in the range the message names".to_owned();
    }
    let fields = crate::config::section_fields(key);
    format!("`{key}` has the fields {}", suggest::list(fields))
}

/// Where and on how many threads a run computes: each of the device and `threads` from the
/// command line, else the run's config (`<section>.device`, `<section>.threads`), else the
/// project's (`project.toml`), else the CPU and every core available. The device must be one
/// this build has; `threads` at least 1 (more than the cores available is a warning).
pub(super) fn resolve_compute(
    check: &ProjectCheck,
    given: (Option<DeviceChoice>, Option<usize>),
    config: (Option<&str>, Option<usize>),
    section: &str,
    diags: &mut Diagnostics,
) -> Option<(DeviceChoice, usize)> {
    let settings = match ProjectSettings::load(&check.project) {
        Ok(s) => s,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    Code::FIELD_TYPE,
                    "",
                    e.to_string(),
                    format!("`{SETTINGS_FILE}` has the fields `device` and `threads`"),
                )
                .with_file(Some(SETTINGS_FILE)),
            );
            return None;
        }
    };
    let file = section_file(check, section);
    let device = match from(
        (given.0.map(|d| d.to_string()), config.0.map(str::to_owned)),
        settings.device.clone(),
        section,
        "device",
        file,
    ) {
        None => Some(DeviceChoice::Cpu),
        Some((named, field, file)) => match DeviceChoice::resolve(given.0, &named, &field) {
            Ok(d) => Some(d),
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        Code::DEVICE,
                        "",
                        e.to_string(),
                        "choose a device this build has (`cpu`; `ndarray` with the `ndarray` feature; `cuda` with the `cuda` feature)".into(),
                    )
                    .with_file(file),
                );
                None
            }
        },
    };
    let cores = crate::threads::available();
    let threads = match from(
        (given.1, config.1),
        settings.threads,
        section,
        "threads",
        file,
    ) {
        None => Some(cores),
        Some((0, field, file)) => {
            diags.push(
                Diagnostic::error(
                    Code::FIELD_TYPE,
                    "",
                    format!("{field} is 0: a run needs at least one compute thread"),
                    format!(
                        "give 1 or more, or leave `threads` out to use every core ({cores} here)"
                    ),
                )
                .with_file(file),
            );
            None
        }
        Some((n, field, file)) => {
            if n > cores {
                diags.push(
                    Diagnostic::warning(
                        Code::SETTING,
                        "",
                        format!("{field} is {n}, more than the {cores} cores available: the compute threads take turns on them, which is slower than {cores}"),
                        format!("leave `threads` out to use every core, or give {cores} or fewer"),
                    )
                    .with_file(file),
                );
            }
            Some(n)
        }
    };
    Some((device?, threads?))
}

/// A run setting `key` from the command line or the run's config (`given`, in that order),
/// else the project's: the value, the field it came from and that field's file; `None` when
/// none gives it.
fn from<'a, T>(
    given: (Option<T>, Option<T>),
    project: Option<T>,
    section: &str,
    key: &str,
    file: Option<&'a str>,
) -> Option<(T, String, Option<&'a str>)> {
    match (given, project) {
        ((Some(v), _), _) => Some((v, format!("--{key}"), None)),
        ((None, Some(v)), _) => Some((v, format!("{section}.{key}"), file)),
        ((None, None), Some(v)) => {
            Some((v, format!("{SETTINGS_FILE}: {key}"), Some(SETTINGS_FILE)))
        }
        ((None, None), None) => None,
    }
}

/// The devices of a training run: `--devices`, else `--device` alone, else
/// `trainer_config.devices`, else the run's one `device`. Each must be one this build can
/// use; with several, each global batch must hold a sample for each.
pub(super) fn resolve_devices(
    check: &ProjectCheck,
    request: &TrainRequest,
    trainer: &TrainerConfig,
    device: DeviceChoice,
    diags: &mut Diagnostics,
) -> Option<Vec<DeviceChoice>> {
    let file = section_file(check, "trainer_config");
    let mut error = |message: String, help: &str, file: Option<&str>| {
        diags.push(Diagnostic::error(Code::DEVICE, "", message, help.to_owned()).with_file(file));
    };
    let (list, field, file) = match (&request.devices, request.device, &trainer.devices) {
        (Some(_), Some(_), _) => {
            error(
                "--device and --devices are both given".into(),
                "give `--devices` for several devices, `--device` for one",
                None,
            );
            return None;
        }
        (Some(list), None, _) => (list, "--devices", None),
        (None, Some(_), _) | (None, None, None) => return Some(vec![device]),
        (None, None, Some(list)) => {
            if trainer.device.is_some() {
                error(
                    "trainer_config has both `device` and `devices`".into(),
                    "keep `devices` for several devices, `device` for one",
                    file,
                );
                return None;
            }
            (list, "trainer_config.devices", file)
        }
    };
    let devices = match crate::backend::parse_devices(list) {
        Ok(d) => d,
        Err(e) => {
            error(
                format!("{field}: {e}"),
                "name the devices as `cpu:0,cpu:1`, `cuda:0,cuda:1` or `cuda:all`",
                file,
            );
            return None;
        }
    };
    for d in &devices {
        if let Err(e) = d.available() {
            error(
                format!("{field}: {e}"),
                "choose devices this build and machine have",
                file,
            );
            return None;
        }
    }
    let batch = trainer.batch_size.train();
    if devices.len() > batch {
        error(
            format!(
                "{field} names {} devices, more than the {batch} samples of a training batch: a device would train on nothing",
                devices.len()
            ),
            "raise `trainer_config.batch_size` to at least the number of devices, or name fewer devices",
            file,
        );
        return None;
    }
    Some(devices)
}

/// The precision of a training run: `--precision`, else `trainer_config.precision`; the
/// device's backend must compute in it.
pub(super) fn resolve_precision(
    check: &ProjectCheck,
    given: Option<crate::precision::Precision>,
    trainer: &TrainerConfig,
    device: DeviceChoice,
    diags: &mut Diagnostics,
) -> Option<crate::precision::Precision> {
    let (precision, field, file) = match given {
        Some(p) => (p, "--precision", None),
        None => (
            trainer.precision,
            "trainer_config.precision",
            section_file(check, "trainer_config"),
        ),
    };
    if device.supports(precision) {
        return Some(precision);
    }
    diags.push(
        Diagnostic::error(
            Code::DEVICE,
            "",
            format!("{field} is {precision}: the `{device}` device's backend does not compute in {precision}"),
            "train in `f32` on it, or choose a device that computes in half precision (`cpu`, `cuda`)".into(),
        )
        .with_file(file),
    );
    None
}
