//! `org.nftlbd1.Error.*` (docs/errors.md), from the service's refusals.

use crate::service::ServiceError;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.nftlbd1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    InvalidArgument(String),
    NotFound(String),
    Exists(String),
    NotAuthorized(String),
    Kernel(String),
    Unsupported(String),
    LimitExceeded(String),
}

impl From<ServiceError> for Error {
    fn from(e: ServiceError) -> Self {
        let text = e.to_string();
        match e {
            ServiceError::Invalid(_) => Error::InvalidArgument(text),
            ServiceError::NotFound(_) => Error::NotFound(text),
            ServiceError::Exists(_) => Error::Exists(text),
            ServiceError::NotAuthorized(_) => Error::NotAuthorized(text),
            ServiceError::Unsupported { .. } => Error::Unsupported(text),
            ServiceError::Kernel(_) | ServiceError::State(_) | ServiceError::Stopped => Error::Kernel(text),
        }
    }
}

impl From<super::limits::Exceeded> for Error {
    fn from(e: super::limits::Exceeded) -> Self {
        Error::LimitExceeded(e.to_string())
    }
}

impl From<crate::model::Invalid> for Error {
    fn from(e: crate::model::Invalid) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// Property setters may only answer with the standard errors (docs/errors.md).
pub fn to_fdo(e: Error) -> zbus::fdo::Error {
    match e {
        Error::NotAuthorized(m) => zbus::fdo::Error::AccessDenied(m),
        Error::ZBus(z) => zbus::fdo::Error::Failed(z.to_string()),
        Error::InvalidArgument(m) | Error::NotFound(m) | Error::Exists(m) => zbus::fdo::Error::InvalidArgs(m),
        Error::Kernel(m) | Error::Unsupported(m) => zbus::fdo::Error::Failed(m),
        Error::LimitExceeded(m) => zbus::fdo::Error::LimitsExceeded(m),
    }
}
