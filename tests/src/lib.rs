//! nc7's workspace-level end-to-end tests: `tests/examples` drives each example's command line
//! on its shipped project; `nc7-examples` is that command line as a program of its own, and
//! [`chaos`] kills and continues trainings of it (`cargo xtask chaos`).

pub mod chaos;
