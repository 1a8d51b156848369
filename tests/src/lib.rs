//! nc7's workspace-level end-to-end tests: `tests/examples` drives each example's command line
//! on its shipped project. This library itself is empty.
