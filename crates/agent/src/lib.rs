//! yard-agent
