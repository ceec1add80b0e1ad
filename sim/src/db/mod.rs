//! The simulated SQL database (under construction).
