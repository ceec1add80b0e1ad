//! shopsim-crosscheck: real PostgreSQL 15 and MariaDB 10.11 next to the simulated database.
