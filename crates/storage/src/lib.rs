//! Object storage and the codec pipeline. Knows nothing of PostgreSQL.

pub mod codec;
pub mod config;
pub mod error;
pub mod store;

pub use codec::Compression;
pub use config::{Destination, Performance, StorageConfig};
pub use error::StorageError;
pub use store::Store;
