//! yard-dns
