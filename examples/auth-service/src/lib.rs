//! Keel's auth service (work in progress).
