//! shopsim-model: the system under test, written the way the Laravel services are —
//! transactions, `lockForUpdate`, unique keys, retries — so that their races are real races.
//!
//! Start with [`shop`] (the deployment and the final state) and [`workload`] (the clients),
//! then the services:
//! [`cart`] (carts, reservations, checkout), [`payment`] (payments, webhooks, ledger),
//! [`order_lock`] (`OrderLockService`), [`queue`] (the worker), [`cache`] and [`provider`]
//! (the other nodes). [`app`] is the request pipeline of an app node; [`audit`] holds the
//! domain checks; [`bugs`] the planted bugs; [`config`] the settings; [`windows`] the race
//! windows `sometimes!` marks; `schema.sql` the tables.
//!
//! This crate has no word for faults: they are injected from outside by the runner.

pub mod app;
pub mod audit;
pub mod bugs;
pub mod cache;
pub mod cart;
pub mod catalog;
pub mod config;
pub mod http;
pub mod order_lock;
pub mod payment;
pub mod provider;
pub mod queue;
pub mod schema;
pub mod shop;
pub mod windows;
pub mod workload;
