//! shopsim-scenarios: scenarios as data and their registry.
