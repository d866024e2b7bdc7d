//! What a caller should do about an error that crosses a module seam: try again, give up on
//! this request, or stop. A leaf: every stage's error type says its kind through [`Kinded`],
//! and the API turns kinds into HTTP statuses in one place.

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: the same request may succeed later (an outage, a timeout, shutting down).
    Retry,
    /// The request itself cannot succeed, however often it is tried.
    Refuse(Refusal),
    /// Something this process needs is broken (a model, the schema): an operator must act.
    Fatal,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or out of range.
    Invalid,
    /// Names something that does not exist.
    Missing,
    /// Clashes with what exists (a duplicate, something owned elsewhere).
    Conflict,
}

/// An error that knows its [`ErrorKind`].
pub trait Kinded {
    /// What the caller should do about it.
    fn kind(&self) -> ErrorKind;
}
