//! Test helpers for shardvault: temporary PostgreSQL, S3 server, fixtures.
