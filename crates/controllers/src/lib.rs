//! yard-controllers
