//! Runs: typed run plans, the coordinators that run them (trainer, inferer), the model and
//! its optimization at run time, saved models, backends, project folders and the command line.

pub mod backend;
pub mod cli;
pub mod coordinator;
pub mod environment;
pub mod export;
pub mod failure;
pub mod integrity;
pub mod kpi;
pub mod memory;
pub mod model;
pub mod optim;
pub mod plan;
pub mod precision;
pub mod project;
pub mod signals;
pub mod threads;
