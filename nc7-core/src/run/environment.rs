//! The environment variables nc7 reads for itself, checked before a command does anything: a
//! value nc7 cannot use is an error (`NC0118`) that names the variable, its value and the
//! values it takes, never a silent fallback to a default.
//!
//! | variable | takes |
//! | --- | --- |
//! | `NC7_LOG` | `off`, `error`, `warn`, `info`, `debug`, `trace` |
//! | `NC7_MALLOC` | `system` (leave glibc's allocator as it is), `tuned` (the default) |
//! | `NC7_MLFLOW` | `on`, `off` (also `true`/`false`, `yes`/`no`, `1`/`0`) |
//! | `NC7_MLFLOW_FLUSH_TIMEOUT`, `MLFLOW_HTTP_REQUEST_TIMEOUT`, `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`, `MLFLOW_HTTP_REQUEST_BACKOFF_JITTER` | seconds, 0 or more |
//! | `MLFLOW_HTTP_REQUEST_MAX_RETRIES` | a whole number, 0 or more |
//! | `MLFLOW_TRACKING_INSECURE_TLS` | `true`, `false` |
//! | `MLFLOW_TRACKING_URI` (when tracking is on) | a path, a `file:` URI, an `http(s)://` URL |

use crate::Code;
use crate::failure::Fault;

/// The values `NC7_MLFLOW` takes that turn tracking off.
pub const TRACKING_OFF: [&str; 4] = ["off", "false", "0", "no"];
const TRACKING_ON: [&str; 4] = ["on", "true", "1", "yes"];

/// The first variable (of the table above) whose value nc7 cannot use; `get` reads one.
pub fn check(get: &dyn Fn(&str) -> Option<String>) -> Result<(), Fault> {
    let bad = |name: &str, value: &str, takes: &str| {
        Err(Fault::new(
            Code::ENVIRONMENT,
            format!(
                "environment variable {name}=`{value}`: {takes}; set it to one of those, or unset it"
            ),
        ))
    };
    let one_of = |name: &str, values: &[&str]| -> Result<(), Fault> {
        match get(name) {
            Some(v) if !values.contains(&v.trim().to_lowercase().as_str()) => bad(
                name,
                &v,
                &format!(
                    "nc7 takes {}",
                    values
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            _ => Ok(()),
        }
    };
    one_of(
        "NC7_LOG",
        &["off", "error", "warn", "info", "debug", "trace"],
    )?;
    one_of("NC7_MALLOC", &["system", "tuned"])?;
    let switches: Vec<&str> = TRACKING_ON.iter().chain(&TRACKING_OFF).copied().collect();
    one_of("NC7_MLFLOW", &switches)?;
    one_of("MLFLOW_TRACKING_INSECURE_TLS", &["true", "false"])?;
    for name in [
        "NC7_MLFLOW_FLUSH_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    ] {
        if let Some(v) = get(name)
            && !v
                .trim()
                .parse::<f64>()
                .is_ok_and(|x| x.is_finite() && x >= 0.0)
        {
            return bad(name, &v, "nc7 takes a number of seconds, 0 or more");
        }
    }
    if let Some(v) = get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        && v.trim().parse::<u32>().is_err()
    {
        return bad(
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
            &v,
            "nc7 takes a whole number, 0 or more",
        );
    }
    let tracking_off =
        get("NC7_MLFLOW").is_some_and(|v| TRACKING_OFF.contains(&v.trim().to_lowercase().as_str()));
    if let (false, Some(uri)) = (tracking_off, get("MLFLOW_TRACKING_URI"))
        && !uri.trim().is_empty()
        && let Err(e) = crate::tracking::mlflow::parse_uri(&uri)
    {
        return Err(Fault::new(
            Code::ENVIRONMENT,
            format!("environment variable MLFLOW_TRACKING_URI: {e}"),
        ));
    }
    Ok(())
}

/// [`check`] on this process's environment.
pub fn check_process() -> Result<(), Fault> {
    check(&|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with(vars: &[(&str, &str)]) -> Result<(), Fault> {
        check(&|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn values_nc7_cannot_use_are_errors_that_name_the_variable() {
        assert_eq!(check_with(&[]), Ok(()));
        assert_eq!(
            check_with(&[
                ("NC7_LOG", "Debug"),
                ("NC7_MALLOC", "system"),
                ("NC7_MLFLOW", "off"),
                ("MLFLOW_TRACKING_URI", "htp://x"),
                ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
                ("NC7_MLFLOW_FLUSH_TIMEOUT", "0.5"),
            ]),
            Ok(())
        );
        for (name, value, says) in [
            ("NC7_LOG", "loud", "`trace`"),
            ("NC7_MALLOC", "jemalloc", "`system`, `tuned`"),
            ("NC7_MLFLOW", "maybe", "`on`"),
            ("NC7_MLFLOW_FLUSH_TIMEOUT", "-1", "seconds"),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "ten", "seconds"),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2.5", "whole number"),
            (
                "MLFLOW_TRACKING_INSECURE_TLS",
                "yes please",
                "`true`, `false`",
            ),
            (
                "MLFLOW_TRACKING_URI",
                "htp://server:5000",
                "MLFLOW_TRACKING_URI",
            ),
        ] {
            let e = check_with(&[(name, value)]).unwrap_err();
            assert_eq!(e.code, Code::ENVIRONMENT, "{name}");
            let text = e.to_string();
            assert!(text.contains(name) && text.contains(says), "{name}: {text}");
        }
    }
}
