//! {{project-name}}: nucleotides for nc7. Linking this library registers them, so the configs in
//! `project/` find them by class name.

pub mod callbacks;
pub mod data;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod models;
