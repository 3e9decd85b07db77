//! Embedded crash-safe resource store for shardvault.
