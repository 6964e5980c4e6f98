//! The pod sandbox's process side: what a container's processes see and may do. [`rootfs`] builds
//! each container's filesystem view with `pivot_root`; [`pidns`] puts it in a PID namespace of its own; [`caps`] sets its capabilities; [`seccomp`]
//! its system-call filter; [`podns`] holds the IPC and UTS namespaces a pod's containers share. Everything is prepared before fork; the child only makes system calls.

pub mod caps;
pub mod pidns;
pub mod podns;
pub mod rootfs;
pub mod seccomp;
