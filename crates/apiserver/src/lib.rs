//! yard-apiserver
