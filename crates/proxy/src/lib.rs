//! yard-proxy
