//! The pod sandbox's process side: what a container's processes see and may do. [`rootfs`] builds
//! each container's filesystem view with `pivot_root`; [`caps`] sets its capabilities; [`seccomp`]
//! its system-call filter. Everything is prepared before fork; the child only makes system calls.

pub mod caps;
pub mod rootfs;
pub mod seccomp;
