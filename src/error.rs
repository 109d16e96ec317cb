//! The one error type of faka's public boundary.
//!
//! Every layer returns [`Error`]; the HTTP layer maps each variant to the
//! contract's status and stable `code` (see `../shared/API.md`, "Conventions").
//! Messages are written for the API user and never contain secrets: no key
//! text, tokens or gateway keys are ever formatted into them.

use std::time::Duration;

/// Errors a request can end in. The variant decides the HTTP status and code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    AmountMismatch(String),
    #[error("{0}")]
    GatewayMismatch(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    OutOfStock(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client was too slow sending its request.
    #[error("{0}")]
    RequestTimeout(String),
    /// Validation failed; the message names the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// Shutting down, storage full or failing, write queue full, or an internal
    /// fault: the client may retry later. The only 5xx faka answers.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// A coupon that does not apply to the order; the message says why.
    #[error("{0}")]
    InvalidCoupon(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound(what.into())
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
            retry_after: Duration::from_secs(1),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidJson(_)
            | Error::InvalidSignature(_)
            | Error::AmountMismatch(_)
            | Error::GatewayMismatch(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::RequestTimeout(_) => 408,
            Error::OutOfStock(_) | Error::Conflict(_) => 409,
            Error::PayloadTooLarge(_) => 413,
            Error::Invalid { .. } | Error::InvalidCoupon(_) => 422,
            Error::RateLimited { .. } => 429,
            Error::Unavailable { .. } => 503,
        }
    }

    /// The stable machine code of the contract.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidSignature(_) => "invalid_signature",
            Error::AmountMismatch(_) => "amount_mismatch",
            Error::GatewayMismatch(_) => "gateway_mismatch",
            Error::Unauthorized(_) => "unauthorized",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::OutOfStock(_) => "out_of_stock",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::RequestTimeout(_) => "request_timeout",
            Error::Invalid { .. } => "invalid_request",
            Error::RateLimited { .. } => "rate_limited",
            Error::Unavailable { .. } => "unavailable",
            Error::InvalidCoupon(_) => "invalid_coupon",
        }
    }

    /// Seconds for the `Retry-After` header, for the errors that carry one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Unavailable { retry_after, .. } => {
                Some(retry_after.as_secs().max(1))
            }
            _ => None,
        }
    }
}

impl From<crate::domain::ids::ParseError> for Error {
    fn from(e: crate::domain::ids::ParseError) -> Self {
        match e {
            crate::domain::ids::ParseError::Invalid { field, message } => {
                Error::invalid(field, message)
            }
            crate::domain::ids::ParseError::NotFound(what) => Error::not_found(what),
        }
    }
}
