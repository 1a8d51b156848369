//! Helpers shared by the integration tests.

/// A complete unit-struct nucleotide of a kind in a few lines: its name, kind, config, key
/// structs and the body of the kind's trait (which names the backend `B`).
#[macro_export]
macro_rules! simple_nucleotide {
    ($name:ident, $kind:ident, $config:ty, $in:ty, $out:ty, { $($body:tt)* }) => {
        #[::nc7_core::nucleotide(kind = $kind)]
        #[derive(::burn::module::Module, Clone, Debug)]
        pub struct $name;
        impl<B: ::burn::prelude::Backend> ::nc7_core::Build<B> for $name {
            type Config = $config;
            type Input = $in;
            type Output = $out;
            fn build(_: &$config, _: &B::Device) -> Result<Self, ::nc7_core::BoxError> {
                Ok($name)
            }
        }
        impl<B: ::burn::prelude::Backend> ::nc7_core::nucleotide::$kind<B> for $name { $($body)* }
    };
}

pub mod mlflow_server;
pub mod python;
#[cfg(feature = "notify")]
pub mod smtp_sink;

/// burn's backends seed one process-wide generator, so trainings that run at the same time in
/// one process draw from each other's stream: every test that trains or builds a model with
/// random weights holds this lock, so its results are those of a run alone.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
