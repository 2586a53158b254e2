//! End-to-end tests: the example and test guests are built for real, then
//! driven through the real runtime, an in-process engine, and the real binary.

#[path = "../support/mod.rs"]
mod support;

mod benches;
mod builtins;
mod capabilities;
mod cli;
mod cloudevents;
mod config_errors;
mod container;
mod deploy;
mod dispatch;
mod distribute;
mod dry_run;
mod engine_process;
mod filters;
mod hostile;
mod hostile_brokers;
mod isolation;
mod kube_actions;
mod kube_watch;
mod languages;
mod layers;
mod leader;
mod module_tests;
mod mqtt;
mod nats;
mod newcomer;
mod ordering;
mod queue;
mod rbac;
mod recipes;
mod recordings;
mod reload;
mod sandbox;
mod scaffold;
mod schedules;
mod shadow;
mod trigger_objects;
mod ui;
mod workflows;
