//! The shop's race windows: every `sometimes!` of the model names one of these, so `run` and
//! `fuzz` know each window before any seed reaches it and can list the ones no seed reached.
//! Each is reached by some built-in scenario (a test runs them on their seeds and checks).

shopsim_sim::windows! {
    /// Adding an item read a product with some units left, but no more than it asks for.
    pub ADD_ITEM_LAST_UNITS = "add item: last units contested";
    /// Adding an item found its cart converted meanwhile (a second tab's add racing the
    /// convert) and refused the item.
    pub ADD_ITEM_CART_CONVERTED = "add item: the cart was converted meanwhile";
    /// A convert found its cart already converted and answered with the existing order.
    pub CONVERT_ALREADY_CONVERTED = "convert: second convert of a converted cart";
    /// A convert locked a reservation that the expiry job released after the convert had
    /// listed it as held.
    pub CONVERT_RESERVATION_TAKEN = "convert: a reservation was taken while converting";
    /// A payment request found its order's payment already created (a double click on Pay,
    /// or a retry) and answered with it.
    pub PAYMENT_ALREADY_CREATED = "payment: the order already has a payment";
    /// A second confirmation of one payment found its idempotency key already inserted.
    pub CONFIRM_DUPLICATE_STOPPED = "confirm: duplicate delivery stopped by the idempotency key";
    /// A lock request found its financial order already locked.
    pub LOCK_SECOND_REJECTED = "lock: a second lock attempt is rejected";
    /// A mutation found its financial order locked and was rejected (and audited).
    pub MUTATION_REJECTED = "mutation: rejected after the lock";
}
