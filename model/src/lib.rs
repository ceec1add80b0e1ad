//! shopsim-model: the system under test, written like the real Laravel services.
