//! Object storage and the codec pipeline. Knows nothing of PostgreSQL.
#![warn(missing_docs)]

mod cloud;
pub mod codec;
pub mod config;
pub mod encryption;
pub mod error;
mod fs;
pub mod openpgp;
mod retry;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod throttle;

pub use codec::{Codec, Compression};
pub use config::{Destination, GcsCredentials, Performance, StorageConfig};
pub use encryption::{Encryption, EncryptionKey, KeyTransform};
pub use error::StorageError;
pub use openpgp::OpenPgpKey;
pub use store::Store;
pub use throttle::Throttle;
